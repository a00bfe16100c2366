#!/usr/bin/env bash
# Start-up benchmark: how long `fluxbase serve` takes until /ready answers 200, and how much
# memory it holds idle.
#
#   bench/startup.sh [BINARY]        (default target/release/fluxbase; `make build` first)
#
# Environment:
#   ROUNDS=5              interleaved rounds (managed, external, managed, external, ...)
#   BENCH_PORT=18080      HTTP port of the measured server (BENCH_PORT+1 for the helper)
#   BENCH_DATABASE_URL    Postgres for the --database-url mode (it gets migrated). Unset: a
#                         throwaway cluster is started with the binary's own managed mode
#                         and used over its unix socket.
#
# Measures per round:
#   managed   serve --data-dir DIR (already initialised): launch -> /ready 200, polled every 10 ms
#   external  serve --database-url URL (already migrated): launch -> /ready 200
#   rss       VmRSS of the fluxbase process (Postgres excluded) 2 s after ready, both modes
# plus the binary size. The first managed start (initdb + migrations) is reported separately
# and excluded from the statistics. Raw output: bench/results/<date>/startup.txt.
#
# Uses only bash, curl, date +%s%N and awk (plus mkdir/rm/stat/sleep). Everything it starts
# is stopped on exit.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-target/release/fluxbase}
case $BIN in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
[ -x "$BIN" ] || { echo "error: $BIN not found or not executable (run \`make build\`)" >&2; exit 1; }
ROUNDS=${ROUNDS:-5}
PORT=${BENCH_PORT:-18080}
HELPER_PORT=$((PORT + 1))
# Never touch a server nobody named: without BENCH_DATABASE_URL a throwaway cluster is used.
DB_URL=${BENCH_DATABASE_URL:-}

OUT_DIR="$ROOT/bench/results/$(date +%F)"
LOG_DIR="$OUT_DIR/tmp/startup-logs" # git-ignored: server logs, for when something fails
OUT="$OUT_DIR/startup.txt"
mkdir -p "$LOG_DIR"
: >"$OUT"

# Short path (unix socket limits) that the `postgres` OS user can traverse when run as root.
WORK=$(mktemp -d /tmp/fbbench.XXXXXX)
chmod 755 "$WORK"

# Configuration comes from the flags alone: no ./fluxbase.yaml (servers run in $WORK), no
# inherited database URL or config file.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT

PIDS=()
cleanup() {
  local pid pgpid f i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || :; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || :
  done
  # A killed fluxbase leaves its managed Postgres behind: fast-stop (SIGINT) those clusters.
  for f in "$WORK"/*/pg/postmaster.pid; do
    [ -f "$f" ] || continue
    read -r pgpid <"$f" || continue
    kill -INT "$pgpid" 2>/dev/null || continue
    for ((i = 0; i < 300; i++)); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "$*" | tee -a "$OUT"; }

now_ns() { date +%s%N; }

# Percent-encodes a path for the host part of a postgres URL.
pct() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

port_free() { # curl exit 7 = connection refused
  local rc=0
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" || rc=$?
  [ "$rc" -eq 7 ]
}

# launch LOG PORT ARGS... : starts fluxbase in the background; sets PID.
launch() {
  local log=$1; shift
  (cd "$WORK" && exec "$BIN" "$@") >>"$log" 2>&1 </dev/null &
  PID=$!
  PIDS+=("$PID")
}

# wait_ready PORT LOG TIMEOUT_S : polls /ready every 10 ms until 200.
wait_ready() {
  local port=$1 log=$2 deadline=$(( $(date +%s) + $3 ))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/ready"; do
    if ! kill -0 "$PID" 2>/dev/null; then
      echo "error: fluxbase exited before it was ready; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: fluxbase not ready after $3 s; see $log" >&2
      exit 1
    fi
    sleep 0.01
  done
}

# stop PID : SIGTERM and wait for the process to exit.
stop() {
  local pid=$1 rc=0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || echo "warning: fluxbase (pid $pid) exited with status $rc" >&2
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# one MODE LOG ARGS... : one measured start; appends a raw line to $OUT.
one() {
  local mode=$1 log=$2; shift 2
  local t0 t1 rss
  t0=$(now_ns)
  launch "$log" "$@"
  wait_ready "$PORT" "$log" 120
  t1=$(now_ns)
  sleep 2
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
  stop "$PID"
  say "$(awk -v m="$mode" -v r="$ROUND" -v a="$t0" -v b="$t1" -v k="$rss" \
    'BEGIN { printf "round=%s mode=%-8s ready_ms=%.1f idle_rss_kb=%s\n", r, m, (b - a) / 1e6, k }')"
}

port_free "$PORT" || { echo "error: port $PORT is in use (set BENCH_PORT)" >&2; exit 1; }

say "# fluxbase start-up benchmark, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "binary=$BIN"
say "binary_bytes=$(stat -c %s "$BIN")"
say "version=$("$BIN" --version)"
say "rounds=$ROUNDS cpus=$(awk '/^processor/ { n++ } END { print n }' /proc/cpuinfo)"

# The managed data dir: the first start runs initdb and migrations; excluded.
DATA="$WORK/managed"
ROUND=0
one first "$LOG_DIR/managed.log" serve --data-dir "$DATA" --port "$PORT"

# The external database: the given URL when it answers, else a throwaway cluster run by a
# helper fluxbase in managed mode, kept running while the rounds use it over its socket.
if [ -n "$DB_URL" ]; then
  FLUXBASE_DATABASE__STARTUP_RETRY_SECS=2 "$BIN" migrate up --database-url "$DB_URL" \
    >>"$LOG_DIR/probe.log" 2>&1 </dev/null || {
    echo "error: BENCH_DATABASE_URL is not usable; see $LOG_DIR/probe.log" >&2
    exit 1
  }
  say "external_db=$DB_URL"
else
  port_free "$HELPER_PORT" || { echo "error: port $HELPER_PORT is in use (set BENCH_PORT)" >&2; exit 1; }
  launch "$LOG_DIR/helper.log" serve --data-dir "$WORK/ext" --port "$HELPER_PORT"
  wait_ready "$HELPER_PORT" "$LOG_DIR/helper.log" 180
  DB_URL="postgresql://postgres@$(pct "$WORK/ext/pg"):5432/postgres"
  say "external_db=throwaway cluster over its unix socket: $DB_URL"
fi

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  one managed "$LOG_DIR/managed.log" serve --data-dir "$DATA" --port "$PORT"
  one external "$LOG_DIR/external.log" serve --database-url "$DB_URL" --port "$PORT"
done

say ""
say "# summary (first start excluded; median [min..max])"
awk '
  function stats(name, arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    med[name] = (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    printf "%-24s %10.1f  [%.1f..%.1f]  n=%d\n", name, med[name], arr[1], arr[n], n
  }
  /^round=/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if (f["mode"] == "first") { first = f["ready_ms"] + 0; next }
    m = f["mode"]; c[m]++
    if (m == "managed") { rm_[c[m]] = f["ready_ms"] + 0; sm[c[m]] = f["idle_rss_kb"] / 1024 }
    else                { re[c[m]] = f["ready_ms"] + 0; se[c[m]] = f["idle_rss_kb"] / 1024 }
  }
  END {
    printf "%-24s %10.1f\n", "first_start_ms (initdb)", first
    stats("ready_ms managed", rm_, c["managed"])
    stats("ready_ms external", re, c["external"])
    stats("idle_rss_mib managed", sm, c["managed"])
    stats("idle_rss_mib external", se, c["external"])
    if (med["ready_ms external"] > 0)
      printf "%-24s %10.2f\n", "ratio managed/external", med["ready_ms managed"] / med["ready_ms external"]
  }' "$OUT" | tee -a "$OUT"
say ""
say "raw results: $OUT"
