#!/usr/bin/env bash
# Auth figures: password sign-in throughput against the machine's bcrypt-verify rate (same
# crate and cost, nproc threads), interleaved over ROUNDS; and refresh-token grants per second.
# Fluxbase runs in managed mode (fsync on) with rate limits and jobs off.
#
#   bench/auth.sh        (env: ROUNDS=3, DURATION=10, PORT=18300)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
PORT=${PORT:-18300}
OUT="bench/results/$(date +%F)"
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
nice -n 10 cargo build --release --locked --bin fluxbase --example bcrypt_ref
WORK=$(mktemp -d /tmp/fbauth.XXXXXX)
chmod 755 "$WORK"
cleanup() { pkill -TERM -f "serve --data-dir $WORK/d" 2>/dev/null || true; sleep 2; rm -rf "$WORK"; }
trap cleanup EXIT
FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_JOBS__ENABLED=false FLUXBASE_LOG__LEVEL=warn \
FLUXBASE_AUTH__MAILER_AUTOCONFIRM=true FLUXBASE_AUTH__REFRESH_TOKEN_REUSE_INTERVAL_SECS=3600 \
  target/release/fluxbase serve --data-dir "$WORK/d" --port "$PORT" >"$WORK/log" 2>&1 &
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
ANON=$(target/release/fluxbase keys show --data-dir "$WORK/d" | awk '/^anon/{print $2}')
export ANON_KEY=$ANON
curl -sf -X POST "http://127.0.0.1:$PORT/auth/v1/signup" -H "apikey: $ANON" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.test","password":"correct horse battery"}' >/dev/null
# 64 sessions (one sign-in each), so refreshes do not all queue on one token's row lock.
TOKENS=""
for _ in $(seq 1 64); do
  T=$(curl -sf -X POST "http://127.0.0.1:$PORT/auth/v1/token?grant_type=password" -H "apikey: $ANON" \
    -H 'Content-Type: application/json' -d '{"email":"bench@example.test","password":"correct horse battery"}' |
    sed -E 's/.*"refresh_token":"([^"]+)".*/\1/')
  TOKENS="$TOKENS${TOKENS:+,}$T"
done
export REFRESH_TOKENS=$TOKENS
{
  echo "# auth bench $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) cpus=$(nproc) rounds=$ROUNDS duration=${DURATION}s"
  for r in $(seq 1 "$ROUNDS"); do
    fx=$(wrk -t2 -c8 -d"${DURATION}s" --latency -s bench/wrk/signin.lua "http://127.0.0.1:$PORT" | awk '/Requests\/sec/{print $2} /Non-2xx/{print "NON2XX " $4}')
    ref=$(target/release/examples/bcrypt_ref 10 "$DURATION" | sed -E 's/.*=([0-9.]+) cost.*/\1/')
    echo "round=$r signin_rps=$fx bcrypt_verify_per_s=$ref"
  done
  wrk -t2 -c16 -d"${DURATION}s" --latency -s bench/wrk/refresh.lua "http://127.0.0.1:$PORT" | awk '/Requests\/sec|99%|Non-2xx/{print "refresh " $0}'
} | tee "$OUT/auth.txt"
