#!/usr/bin/env bash
# Runs every benchmark (`make bench`). Raw output goes under bench/results/<date>/; copy the
# summary into docs/benchmarks.md. Later benchmarks (REST, auth, storage, realtime) are
# added here.
set -euo pipefail
cd "$(dirname "$0")/.."

bench/startup.sh "$@"
bench/jobs.sh
bench/schema.sh
bench/rest.sh
bench/auth.sh
bench/realtime.sh
bench/storage.sh
bench/webhooks.sh
bench/observability.sh
