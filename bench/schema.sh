#!/usr/bin/env bash
# Schema-cache load time for 1,000 tables (target < 1 s) on a throwaway managed cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/$(date +%F)"
mkdir -p "$out"
cargo build --release --locked --example schema_bench
target/release/examples/schema_bench "${1:-1000}" 2>&1 | grep -v '"level"' | tee "$out/schema.txt"
