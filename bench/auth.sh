#!/usr/bin/env bash
# Auth figures: password sign-in throughput against the machine's bcrypt-verify rate (same
# crate and cost, nproc threads), interleaved over ROUNDS; refresh-token grants per second;
# REST single-row GET p99 idle vs while sign-ins saturate the CPU (interleaved rounds); and
# the JWT verification overhead on that GET, anon key vs a user's access token (PAIRS
# interleaved pairs). Fluxbase runs in managed mode (fsync on) with rate limits and jobs off.
#
#   bench/auth.sh        (env: ROUNDS=3, DURATION=10, PAIRS=8, PORT=18300; FLUXBASE_BIN)
#
#   IR=1 bench/auth.sh   the JWT overhead as instructions (ARCHITECTURE §8: a few percent is
#                        below wrk's noise): builds the `profiling` profile (release + symbols;
#                        CARGO_LOCK= a lock file to hold while building), runs Fluxbase under
#                        valgrind's callgrind and, in ROUNDS interleaved rounds (order alternating),
#                        zeroes the counters, drives IR_DURATION s of `wrk -t1 -c$IR_CONNECTIONS`
#                        with the anon key or a user's access token as Bearer, dumps, and reports
#                        Fluxbase's instructions per completed request both ways and their ratio
#                        (Postgres not counted). Only this figure runs. KEEP_DUMPS=1 keeps the
#                        dumps (for callgrind_annotate). env: IR_DURATION=15 IR_CONNECTIONS=4
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
PORT=${PORT:-18300}
OUT="bench/results/$(date +%F)"
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
PAIRS=${PAIRS:-8}
IR=${IR:-0}
IR_DURATION=${IR_DURATION:-15}
IR_CONNECTIONS=${IR_CONNECTIONS:-4}
WRAP=()
if [ "$IR" = 1 ]; then
  for t in valgrind callgrind_control; do
    command -v "$t" >/dev/null || { echo "error: $t is required for IR=1" >&2; exit 1; }
  done
  [ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }
  ${CARGO_LOCK:+flock "$CARGO_LOCK"} nice -n 10 cargo build --profile profiling --locked --bin fluxbase
  FLUXBASE_BIN=${CARGO_TARGET_DIR:-target}/profiling/fluxbase
  RAW="$OUT/auth-ir"
  mkdir -p "$RAW"
  rm -f "$RAW"/callgrind.out*
  WRAP=(valgrind --tool=callgrind --callgrind-out-file="$RAW/callgrind.out")
  # Sign-ins only set the bench up here: a low cost keeps them quick under valgrind.
  export FLUXBASE_AUTH__BCRYPT_COST=4
elif [ -n "${FLUXBASE_BIN:-}" ]; then
  # With FLUXBASE_BIN (a binary built earlier) only the reference is built.
  [ -x target/release/examples/bcrypt_ref ] || nice -n 10 cargo build --release --locked --example bcrypt_ref
else
  nice -n 10 cargo build --release --locked --bin fluxbase --example bcrypt_ref
fi
BIN=${FLUXBASE_BIN:-target/release/fluxbase}
WORK=$(mktemp -d /tmp/fbauth.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  pkill -TERM -f "serve --data-dir $WORK/d" 2>/dev/null || true
  # Under valgrind the server takes longer to stop (and writes a last dump, not kept).
  for _ in $(seq 1 600); do kill -0 "${FX_PID:-0}" 2>/dev/null || break; sleep 0.1; done
  sleep 2
  [ "$IR" != 1 ] || rm -f "$RAW/callgrind.out"*
  rm -rf "$WORK"
}
trap cleanup EXIT
FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_JOBS__ENABLED=false FLUXBASE_LOG__LEVEL=warn \
FLUXBASE_AUTH__MAILER_AUTOCONFIRM=true FLUXBASE_AUTH__REFRESH_TOKEN_REUSE_INTERVAL_SECS=3600 \
  "${WRAP[@]}" "$BIN" serve --data-dir "$WORK/d" --port "$PORT" >"$WORK/log" 2>&1 &
FX_PID=$!
for _ in $(seq 1 3000); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
ANON=$("$BIN" keys show --data-dir "$WORK/d" | awk '/^anon/{print $2}')
export ANON_KEY=$ANON
curl -sf -X POST "http://127.0.0.1:$PORT/auth/v1/signup" -H "apikey: $ANON" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.test","password":"correct horse battery"}' >/dev/null
# 64 sessions (one sign-in each), so refreshes do not all queue on one token's row lock.
TOKENS=""
[ "$IR" = 1 ] || for _ in $(seq 1 64); do
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
if [ "$IR" = 1 ]; then
  # ir_get WHO BEARER ROUND : zeroed counters, IR_DURATION s of GETs, a dump; one summary line.
  ir_get() {
    local who=$1 bearer=$2 round=$3 f n dump ir reqs
    callgrind_control -z "$FX_PID" >/dev/null
    f="$RAW/ir-$who-r$round.txt"
    BENCH_TARGET=fluxbase APIKEY=$ANON BEARER=$bearer WRK_DIR=bench/wrk \
      wrk -t1 -c"$IR_CONNECTIONS" -d"${IR_DURATION}s" -s bench/wrk/single.lua "http://127.0.0.1:$PORT" >"$f" 2>&1
    ! grep -q 'Non-2xx' "$f" || { echo "error: non-2xx answers; see $f" >&2; exit 1; }
    n=$(ls "$RAW"/callgrind.out* 2>/dev/null | wc -l)
    callgrind_control -d "$FX_PID" >/dev/null
    for _ in $(seq 1 300); do [ "$(ls "$RAW"/callgrind.out* | wc -l)" -gt "$n" ] && break; sleep 0.1; done
    dump=$(ls -t "$RAW"/callgrind.out* | head -1)
    mv "$dump" "$RAW/callgrind-$who-r$round.out"
    dump="$RAW/callgrind-$who-r$round.out"
    ir=$(awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$dump")
    reqs=$(awk '/requests in/ { print $1; exit }' "$f")
    [ "${KEEP_DUMPS:-0}" = 1 ] || rm -f "$dump"
    echo "round=$round who=$who requests=$reqs instructions=$ir ir_per_req=$(awk -v i="$ir" -v r="$reqs" 'BEGIN { printf "%.0f", i / r }')"
  }
  {
    echo "# JWT overhead in instructions $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted src changes')"
    echo "# $("$BIN" --version) (profile profiling) under valgrind --tool=callgrind; GET /rest/v1/items?id=eq.N (bench/wrk/single.lua)"
    echo "# per run: counters zeroed, wrk -t1 -c$IR_CONNECTIONS -d${IR_DURATION}s, dump; anon = anon key as Bearer, user = a user's access token; apikey = anon key both"
    echo "# token lengths: anon ${#ANON} B, user ${#USER_JWT} B"
    # Warm-up: both tokens in the verified-token cache, statements prepared, pools full.
    for t in "$ANON" "$USER_JWT"; do
      BENCH_TARGET=fluxbase APIKEY=$ANON BEARER=$t WRK_DIR=bench/wrk \
        wrk -t1 -c"$IR_CONNECTIONS" -d5s -s bench/wrk/single.lua "http://127.0.0.1:$PORT" >/dev/null
    done
    for r in $(seq 1 "$ROUNDS"); do
      if [ $((r % 2)) = 1 ]; then
        ir_get anon "$ANON" "$r"; ir_get user "$USER_JWT" "$r"
      else
        ir_get user "$USER_JWT" "$r"; ir_get anon "$ANON" "$r"
      fi
    done
  } | tee "$OUT/auth-ir.txt"
  awk '
    function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    /^round=/ { for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
      if (kv["who"] == "anon") a[++na] = kv["ir_per_req"]; else u[++nu] = kv["ir_per_req"] }
    END { ma = med(a, na); mu = med(u, nu)
      printf "summary: instructions/request median [min..max] over %d rounds: anon %.0f [%.0f..%.0f], user JWT %.0f [%.0f..%.0f]\n", na, ma, a[1], a[na], mu, u[1], u[nu]
      printf "summary: JWT overhead = user/anon - 1 = %.2f %% of Fluxbase'"'"'s instructions (target <= 5 %%)\n", (mu / ma - 1) * 100 }
  ' "$OUT/auth-ir.txt" | tee -a "$OUT/auth-ir.txt"
  exit 0
fi
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
