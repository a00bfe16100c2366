#!/usr/bin/env bash
# Auth figures: password sign-in throughput against the machine's bcrypt-verify rate (same
# crate and cost, nproc threads), interleaved over ROUNDS; refresh-token grants per second;
# REST single-row GET p99 idle vs while sign-ins saturate the CPU (interleaved rounds); and
# the JWT verification overhead on that GET, anon key vs a user's access token (PAIRS
# interleaved pairs). Fluxbase runs in managed mode (fsync on) with rate limits and jobs off.
#
#   bench/auth.sh        (env: ROUNDS=3, DURATION=10, PAIRS=8, PORT=18300; FLUXBASE_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
PORT=${PORT:-18300}
OUT="bench/results/$(date +%F)"
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
PAIRS=${PAIRS:-8}
# With FLUXBASE_BIN (a binary built earlier) only the reference is built.
if [ -n "${FLUXBASE_BIN:-}" ]; then
  [ -x target/release/examples/bcrypt_ref ] || nice -n 10 cargo build --release --locked --example bcrypt_ref
else
  nice -n 10 cargo build --release --locked --bin fluxbase --example bcrypt_ref
fi
BIN=${FLUXBASE_BIN:-target/release/fluxbase}
WORK=$(mktemp -d /tmp/fbauth.XXXXXX)
chmod 755 "$WORK"
cleanup() { pkill -TERM -f "serve --data-dir $WORK/d" 2>/dev/null || true; sleep 2; rm -rf "$WORK"; }
trap cleanup EXIT
FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_JOBS__ENABLED=false FLUXBASE_LOG__LEVEL=warn \
FLUXBASE_AUTH__MAILER_AUTOCONFIRM=true FLUXBASE_AUTH__REFRESH_TOKEN_REUSE_INTERVAL_SECS=3600 \
  "$BIN" serve --data-dir "$WORK/d" --port "$PORT" >"$WORK/log" 2>&1 &
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
ANON=$("$BIN" keys show --data-dir "$WORK/d" | awk '/^anon/{print $2}')
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
# A user's access token (for the JWT overhead figure) and a table for the REST GET.
USER_JWT=$(curl -sf -X POST "http://127.0.0.1:$PORT/auth/v1/token?grant_type=password" -H "apikey: $ANON" \
  -H 'Content-Type: application/json' -d '{"email":"bench@example.test","password":"correct horse battery"}' |
  sed -E 's/.*"access_token":"([^"]+)".*/\1/')
PGURL="postgresql://postgres@$(python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' "$WORK/d/pg"):5432/postgres"
psql "$PGURL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE items (id serial PRIMARY KEY, category int NOT NULL, name text NOT NULL,
  price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO items (category, name, price, created_at)
SELECT g % 100, 'item ' || g, ((g * 7919) % 100000) / 100.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 100000) g;
VACUUM ANALYZE items;
NOTIFY pgrst, 'reload schema';
SQL
sleep 1
for t in "$ANON" "$USER_JWT"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/rest/v1/items?id=eq.7" -H "apikey: $ANON" -H "Authorization: Bearer $t")
  [ "$code" = 200 ] || { echo "error: REST GET answered $code" >&2; exit 1; }
done
# rest_get [BEARER] [CONNECTIONS] [SECONDS] : wrk on the single-row GET; prints "rps p99_ms".
rest_get() {
  BENCH_TARGET=fluxbase APIKEY=$ANON BEARER=${1:-$ANON} WRK_DIR=bench/wrk \
    wrk -t1 -c"${2:-2}" -d"${3:-$DURATION}s" --latency -s bench/wrk/single.lua "http://127.0.0.1:$PORT" |
    awk 'function ms(v, n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
           if (u == "us") return n / 1000; if (u == "s") return n * 1000; return n }
         /Requests\/sec/ { r = $2 } $1 == "99%" { p = ms($2) } /Non-2xx/ { bad = 1 }
         END { printf "%s %.2f%s\n", r, p, bad ? " NON2XX" : "" }'
}
{
  echo "# auth bench $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) cpus=$(nproc) rounds=$ROUNDS duration=${DURATION}s"
  for r in $(seq 1 "$ROUNDS"); do
    fx=$(wrk -t2 -c8 -d"${DURATION}s" --latency -s bench/wrk/signin.lua "http://127.0.0.1:$PORT" | awk '/Requests\/sec/{print $2} /Non-2xx/{print "NON2XX " $4}')
    ref=$(target/release/examples/bcrypt_ref 10 "$DURATION" | sed -E 's/.*=([0-9.]+) cost.*/\1/')
    echo "round=$r signin_rps=$fx bcrypt_verify_per_s=$ref"
  done
  wrk -t2 -c16 -d"${DURATION}s" --latency -s bench/wrk/refresh.lua "http://127.0.0.1:$PORT" | awk '/Requests\/sec|99%|Non-2xx/{print "refresh " $0}'
  # REST under sign-in load: the GET at 2 connections alone, then the same while wrk keeps 8
  # sign-ins in flight (bcrypt saturates both cores), interleaved.
  for r in $(seq 1 "$ROUNDS"); do
    echo "round=$r rest_idle rps_p99=$(rest_get "$ANON" 2)"
    wrk -t1 -c8 -d"$((DURATION + 2))s" -s bench/wrk/signin.lua "http://127.0.0.1:$PORT" >/dev/null &
    sleep 1
    echo "round=$r rest_under_signin rps_p99=$(rest_get "$ANON" 2)"
    wait
  done
  # JWT overhead: saturating GETs with the anon key vs a user's access token, in pairs whose
  # order alternates.
  half=$(( (DURATION + 1) / 2 ))
  for p in $(seq 1 "$PAIRS"); do
    if [ $((p % 2)) = 1 ]; then
      a=$(rest_get "$ANON" 32 "$half"); u=$(rest_get "$USER_JWT" 32 "$half")
    else
      u=$(rest_get "$USER_JWT" 32 "$half"); a=$(rest_get "$ANON" 32 "$half")
    fi
    echo "pair=$p jwt anon_rps_p99=$a user_rps_p99=$u"
  done
} | tee "$OUT/auth.txt"
awk '
  function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  /rest_idle/ { split($3, v, "="); i[++ni] = $4 }
  /rest_under_signin/ { l[++nl] = $4 }
  /^pair=/ { split($3, a, "="); split($5, u, "="); ov[++np] = 1 - u[2] / a[2] }
  /^round=.*signin_rps/ { split($2, f, "="); split($3, b, "="); sr[++ns] = f[2] / b[2] }
  END {
    if (ns) printf "summary: sign-in / bcrypt ratio median %.3f (target >= 0.9)\n", med(sr, ns)
    if (ni && nl) printf "summary: REST GET p99 idle %.2f ms, under sign-in load %.2f ms: %.2fx (target <= 3x)\n", med(i, ni), med(l, nl), med(l, nl) / med(i, ni)
    if (np) printf "summary: JWT overhead (1 - user/anon req/s) median %.1f%% over %d pairs (target <= 5%%)\n", 100 * med(ov, np), np
  }' "$OUT/auth.txt" | tee -a "$OUT/auth.txt"
