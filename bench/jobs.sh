#!/usr/bin/env bash
# Job queue figures (issue: durable jobs): no-op jobs/s with 2 workers vs pgbench running the
# same claim + complete SQL with 2 clients, enqueue of 10,000 jobs in one transaction, and
# commit -> start latency with an idle worker. Everything runs on a throwaway managed cluster
# (fsync on) that the tool starts and stops itself.
#
#   bench/jobs.sh [ROUNDS] [JOBS_PER_ROUND]     (defaults 5, 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/$(date +%F)"
mkdir -p "$out"
cargo build --release --locked --example jobs_bench
target/release/examples/jobs_bench "${1:-5}" "${2:-5000}" 2>&1 | tee "$out/jobs.txt"
