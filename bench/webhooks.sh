#!/usr/bin/env bash
# Webhooks benchmark (issue: webhooks, observability): delivery throughput and
# commit-to-delivery latency of table webhooks, from the AFTER trigger's outbox row + job to
# a signed POST received by a local receiver. One throwaway managed cluster (fsync on); the
# load tool (bench/webhooks_load.rs) runs the receiver on 127.0.0.1, creates the hook through
# /api/v1/webhooks, inserts the rows and counts ids received (unique, duplicates, missing).
#
#   bench/webhooks.sh
#
# Scenarios (interleaved: burst r1, steady r1, burst r2, ...):
#   burst   ROWS rows in statements of BATCH rows, back to back  >= 500 deliveries/s
#   steady  100 rows/s, one row per statement, for SECS s         commit-to-delivery p50 < 50 ms
#
# Environment:
#   ROUNDS=3            rounds per scenario (>= 3)
#   ROWS=5000 BATCH=1000   burst size and rows per INSERT
#   RATE=100 SECS=25    steady rate and duration
#   CONCURRENCY=16      job slots of the `webhooks` queue (jobs.queue_concurrency webhooks=N)
#   POOL_SIZE=24        database.pool_size (each busy slot holds one connection at a time)
#   SWEEP="4 32"        after the rounds: one burst per listed concurrency, each on a
#                       restarted server ("" = none)
#   BENCH_PORT=18500    Fluxbase's HTTP port
#   CARGO_LOCK=         a lock file to hold (flock) while building, on machines shared by builds
#   FLUXBASE_BIN=       run this fluxbase binary instead of the one built (A/B of a change)
#   OUT_NAME=webhooks   name of the summary file and raw directory
#
# Output: RESULT lines and the summary in bench/results/<date>/webhooks.txt, raw tool output
# in bench/results/<date>/webhooks/, server logs in bench/results/<date>/tmp/webhooks-logs/
# (git-ignored).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
ROWS=${ROWS:-5000}
BATCH=${BATCH:-1000}
RATE=${RATE:-100}
SECS=${SECS:-25}
CONCURRENCY=${CONCURRENCY:-16}
POOL_SIZE=${POOL_SIZE:-24}
SWEEP=${SWEEP-4 32}
PORT=${BENCH_PORT:-18500}

[ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }

# --- build ------------------------------------------------------------------------------------
${CARGO_LOCK:+flock "$CARGO_LOCK"} nice -n 10 cargo build --release --locked --bin fluxbase \
  --example webhooks_load
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="${FLUXBASE_BIN:-$TARGET_DIR/release/fluxbase}"
LOAD="$TARGET_DIR/release/examples/webhooks_load"
BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain -- src migrations Cargo.toml Cargo.lock bench/webhooks_load.rs \
  2>/dev/null | awk '{ printf "%s%s", sep, $2; sep = " " }')
[ -z "$DIRTY" ] || BUILT_FROM+=" + uncommitted changes in: $DIRTY"
[ -z "${FLUXBASE_BIN:-}" ] || BUILT_FROM+="; server binary: $FLUXBASE_BIN (FLUXBASE_BIN, not this build)"

DATE=$(date +%F)
OUT_DIR="$ROOT/bench/results/$DATE"
OUT_NAME=${OUT_NAME:-webhooks}
RAW_DIR="$OUT_DIR/$OUT_NAME"
LOG_DIR="$OUT_DIR/tmp/$OUT_NAME-logs" # git-ignored
OUT="$OUT_DIR/$OUT_NAME.txt"
mkdir -p "$RAW_DIR" "$LOG_DIR"
rm -f "$RAW_DIR"/*.txt
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
for t in psql curl awk top; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- processes --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/fbwh.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"
FX_PID=''
LOAD_PID=''

stop_pid() { # PID: SIGTERM, wait up to 60 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || :
}
cleanup() {
  local pgpid f i
  stop_pid "$LOAD_PID"
  stop_pid "$FX_PID"
  # A killed fluxbase leaves its managed Postgres behind: fast-stop (SIGINT) it.
  for f in "$DATA"/pg/postmaster.pid; do
    [ -f "$f" ] || continue
    read -r pgpid <"$f" || continue
    kill -INT "$pgpid" 2>/dev/null || continue
    for ((i = 0; i < 300; i++)); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { # curl exit 7 = connection refused
  local rc=0
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" || rc=$?
  [ "$rc" -eq 7 ]
}
port_free "$PORT" || { echo "error: port $PORT is in use (set BENCH_PORT)" >&2; exit 1; }

# Configuration from the environment alone. Jobs on (they deliver); rate limits off; the
# receiver is on loopback, which the SSRF guard refuses unless allowed.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT \
  FLUXBASE_DATABASE__MANAGED__FSYNC DATABASE_URL FLUXBASE_JOBS__CONCURRENCY
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_LOG__LEVEL=warn FLUXBASE_JOBS__ENABLED=true \
  FLUXBASE_OUTBOUND__ALLOW_PRIVATE_NETWORKS=127.0.0.1/32 FLUXBASE_DATABASE__POOL_SIZE="$POOL_SIZE"

start_fx() { # CONCURRENCY
  export FLUXBASE_JOBS__QUEUE_CONCURRENCY="webhooks=$1"
  (cd "$WORK" && exec "$BIN" serve --data-dir "$DATA" --port "$PORT") \
    >>"$LOG_DIR/fluxbase.log" 2>&1 </dev/null &
  FX_PID=$!
  local deadline=$(($(date +%s) + 180))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/ready"; do
    kill -0 "$FX_PID" 2>/dev/null || { echo "error: fluxbase exited; see $LOG_DIR/fluxbase.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "error: fluxbase not ready after 180 s" >&2; exit 1; }
    sleep 0.05
  done
  read -r PG_PID <"$DATA/pg/postmaster.pid"
}
stop_fx() { stop_pid "$FX_PID"; FX_PID=''; }

: >"$LOG_DIR/fluxbase.log"
start_fx "$CONCURRENCY"
PG="host=$DATA/pg port=5432 user=postgres dbname=postgres"
psql_q() { psql "$PG" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_q >"$LOG_DIR/setup.log" 2>&1 <<'SQL'
CREATE TABLE public.bench_hook (
  id bigint PRIMARY KEY,
  sent_at bigint DEFAULT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint,
  body text
);
SQL
API="http://127.0.0.1:$PORT"

# --- runs ---------------------------------------------------------------------------------------
# load SCENARIO ROUND TOOL_ARGS... : one run of the load tool; its RESULT line goes to $OUT
# prefixed with the scenario, everything else to the raw file.
load() {
  local sc=$1 round=$2 f line load1
  shift 2
  # Succeeded jobs and deliveries of earlier runs stay in their tables: vacuum them so each
  # run claims from the same shape of queue.
  psql_q -c 'VACUUM (ANALYZE) jobs.jobs, webhooks.deliveries' >/dev/null 2>&1 || :
  sleep 1
  load1=$(cut -d' ' -f1 /proc/loadavg)
  f="$RAW_DIR/$sc-r$round.txt"
  "$LOAD" --api "$API" --pg "$PG" --label "$sc/r$round" \
    --cpu "server=$FX_PID,postgres=$PG_PID+" "$@" >"$f" 2>&1 &
  LOAD_PID=$!
  if [ "$round" = 1 ]; then # one thread snapshot of the server while it delivers
    (sleep "$([ "$sc" = steady ] && echo $((SECS / 2)) || echo 2)"
     top -b -n1 -H -w 200 -p "$FX_PID" | head -n 25 >"$RAW_DIR/$sc-top.txt" 2>&1) &
  fi
  wait "$LOAD_PID" || { echo "error: webhooks_load failed ($sc r$round); see $f" >&2; tail -5 "$f" >&2; exit 1; }
  LOAD_PID=''
  curl -s "$API/metrics" | grep '^fluxbase_jobs' >>"$f" || :
  line=$(grep '^RESULT ' "$f") || { echo "error: no RESULT in $f" >&2; exit 1; }
  say "scenario=$sc round=$round concurrency=$CUR ${line#RESULT } loadavg_before=$load1"
  grep '^NOTE' "$f" | sed "s/^/  $sc r$round: /" | tee -a "$OUT" || :
}

say "# Fluxbase webhooks benchmark, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "built from: $BUILT_FROM"
say "fluxbase=$("$BIN" --version) cpus=$(nproc) rounds=$ROUNDS"
say "database: throwaway managed cluster (fsync on); inserts by the load tool over its unix socket"
say "fluxbase: managed mode, jobs on (jobs.queue_concurrency webhooks=$CONCURRENCY, other queues default), database.pool_size=$POOL_SIZE, poll_interval_ms default (NOTIFY wakes), rate limits off, log level warn, outbound.allow_private_networks=127.0.0.1/32"
say "load tool: bench/webhooks_load.rs (1 runtime thread + 1 receiver worker verifying each signature), on the same $(nproc) cores; cpu_*_pct = CPU time from the first insert to the last delivery (100 = one core)"
say "burst: $ROWS rows in INSERTs of $BATCH rows; deliveries_per_s = rows / (first insert sent -> last delivery received); recv_rate = deliveries / (first -> last delivery)"
say "steady: $RATE rows/s x ${SECS}s, one row per INSERT (2 connections, pipelined); latency = receiver clock - row's sent_at (column default clock_timestamp, before commit)"
say ""

echo "warming up (one burst of 1000 rows) ..." >&2
CUR=$CONCURRENCY
"$LOAD" --api "$API" --pg "$PG" --mode burst --rows 1000 --batch 1000 --label warmup \
  >"$LOG_DIR/warmup.txt" 2>&1 || { echo "error: warm-up failed; see $LOG_DIR/warmup.txt" >&2; exit 1; }

BURST=(--mode burst --rows "$ROWS" --batch "$BATCH" --drain-secs 120)
STEADY=(--mode steady --rate "$RATE" --secs "$SECS" --drain-secs 30)
for ((r = 1; r <= ROUNDS; r++)); do
  load burst "$r" "${BURST[@]}"
  load steady "$r" "${STEADY[@]}"
done
for c in $SWEEP; do
  stop_fx
  start_fx "$c"
  CUR=$c
  load "burst-c$c" 1 "${BURST[@]}"
done

# --- summary ------------------------------------------------------------------------------------
say ""
say "## summary: median [min..max] over the rounds"
awk '
  function med(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function stat(key,   n, i, a, parts) {
    n = split(vals[key], parts, " ")
    for (i = 1; i <= n; i++) a[i] = parts[i] + 0
    return sprintf("%.2f [%.2f..%.2f]", med(a, n), a[1], a[n])
  }
  /^scenario=/ {
    delete kv
    for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    g = kv["scenario"] " (concurrency " kv["concurrency"] ")"
    if (!(g in seen)) { seen[g] = 1; order[++ng] = g }
    for (k in kv) vals[g SUBSEP k] = vals[g SUBSEP k] " " kv[k]
  }
  END {
    for (i = 1; i <= ng; i++) {
      g = order[i]
      printf "%s: deliveries_per_s=%s recv_rate=%s p50_ms=%s p95_ms=%s p99_ms=%s max_ms=%s actual_rate=%s missing=%s dups=%s retried=%s bad_sig=%s insert_s=%s cpu_server_pct=%s cpu_postgres_pct=%s cpu_tool_pct=%s\n", g,
        stat(g SUBSEP "deliveries_per_s"), stat(g SUBSEP "recv_rate"), stat(g SUBSEP "p50_ms"),
        stat(g SUBSEP "p95_ms"), stat(g SUBSEP "p99_ms"), stat(g SUBSEP "max_ms"),
        stat(g SUBSEP "actual_rate"), stat(g SUBSEP "missing"), stat(g SUBSEP "dups"),
        stat(g SUBSEP "retried"), stat(g SUBSEP "bad_sig"), stat(g SUBSEP "insert_s"),
        stat(g SUBSEP "cpu_server_pct"), stat(g SUBSEP "cpu_postgres_pct"), stat(g SUBSEP "cpu_tool_pct")
    }
  }
' "$OUT" | tee -a "$OUT"
say ""
say "fluxbase log: $(grep -c . "$LOG_DIR/fluxbase.log" || :) lines ($(grep -ci 'warn' "$LOG_DIR/fluxbase.log" || :) WARN, $(grep -ci 'error' "$LOG_DIR/fluxbase.log" || :) ERROR); first lines:"
grep -i 'warn\|error' "$LOG_DIR/fluxbase.log" | head -n 5 | cut -c1-300 | sed 's/^/  /' | tee -a "$OUT" || :
say "raw: $RAW_DIR/  logs: $LOG_DIR/"
