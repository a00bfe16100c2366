#!/usr/bin/env bash
# Observability overhead (issue: webhooks, observability): the single-row REST GET of
# bench/rest.sh (GET /rest/v1/items?id=eq.N, items: 100,000 rows) measured with wrk against
# Fluxbase with metrics and the access log on (the defaults: metrics.enabled=true,
# log.level=info, one JSON line per request on stderr, here a file) and off
# (metrics.enabled=false, log.level=error), in interleaved rounds on, off, on, off, ...
# The two configurations need two processes: each round starts Fluxbase afresh (same
# throwaway managed cluster, fsync on), warms up, then measures.
#
#   bench/observability.sh
#
# Environment:
#   ROUNDS=4           rounds per configuration (>= 3)
#   DURATION=10        seconds per measured wrk run
#   WARMUP=3           seconds of unrecorded wrk after each start
#   CONNECTIONS=50 THREADS=2   wrk settings
#   BENCH_PORT=18650   Fluxbase's HTTP port
#   CARGO_LOCK=        a lock file to hold (flock) while building
#   IR=1               count instructions instead (ARCHITECTURE §8: overheads of a few percent
#                      are below wrk's noise on a shared machine): each round runs Fluxbase
#                      under valgrind's callgrind, zeroes the counters after the warm-up, drives
#                      IR_DURATION s of `wrk -t1 -c$IR_CONNECTIONS`, dumps, and reports the
#                      Fluxbase process's instructions (all threads, incl. the log writer) per
#                      completed request. Postgres is not counted (it is not Fluxbase's cost).
#   IR_DURATION=20 IR_CONNECTIONS=4
#   PROFILE=release    cargo profile to build and run (`profiling` keeps symbols, for
#                      callgrind_annotate); KEEP_DUMPS=1 keeps the callgrind dumps (IR=1)
#
# Output: raw wrk output in bench/results/<date>/observability/, the summary in
# bench/results/<date>/observability.txt, server logs in
# bench/results/<date>/tmp/observability-logs/ (git-ignored).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
PORT=${BENCH_PORT:-18650}
IR=${IR:-0}
IR_DURATION=${IR_DURATION:-20}
IR_CONNECTIONS=${IR_CONNECTIONS:-4}

[ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }

# --- build and tools ------------------------------------------------------------------------
PROFILE=${PROFILE:-release}
${CARGO_LOCK:+flock "$CARGO_LOCK"} nice -n 10 cargo build --profile "$PROFILE" --locked --bin fluxbase
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/fluxbase"
BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null |
  awk '{ printf "%s%s", sep, $2; sep = " " }')
[ -z "$DIRTY" ] || BUILT_FROM+=" + uncommitted changes in: $DIRTY"

DATE=$(date +%F)
OUT_DIR="$ROOT/bench/results/$DATE"
RAW_DIR="$OUT_DIR/observability"
LOG_DIR="$OUT_DIR/tmp/observability-logs" # git-ignored
OUT="$OUT_DIR/observability.txt"
if [ "$IR" = 1 ]; then
  RAW_DIR="$OUT_DIR/observability-ir"
  OUT="$OUT_DIR/observability-ir.txt"
  for t in valgrind callgrind_control; do
    command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required for IR=1" >&2; exit 1; }
  done
fi
mkdir -p "$RAW_DIR" "$LOG_DIR"
rm -f "$RAW_DIR"/*.txt "$LOG_DIR"/*.log
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk not found; installing it with apt-get" >&2
  { apt-get update && apt-get install -y wrk; } >"$LOG_DIR/apt.log" 2>&1 || {
    echo "error: could not install wrk with apt-get (see $LOG_DIR/apt.log)" >&2
    exit 1
  }
fi
for t in psql curl awk jq; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- processes --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/fbobs.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"
FX_PID=''

stop_pid() { # PID: SIGTERM, wait up to 60 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || :
}
cleanup() {
  local pgpid f i
  stop_pid "$FX_PID"
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

# Configuration from the environment alone; no background work during the measurement.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT \
  FLUXBASE_DATABASE__MANAGED__FSYNC DATABASE_URL FLUXBASE_LOG__FORMAT
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_JOBS__ENABLED=false

start_fx() { # on|off
  local mode=$1
  if [ "$mode" = on ]; then
    export FLUXBASE_METRICS__ENABLED=true FLUXBASE_LOG__LEVEL=info
  else
    export FLUXBASE_METRICS__ENABLED=false FLUXBASE_LOG__LEVEL=error
  fi
  local wrap=()
  if [ "$IR" = 1 ] && [ -n "${2:-}" ]; then
    wrap=(valgrind --tool=callgrind --callgrind-out-file="$RAW_DIR/callgrind-$mode-r$2.out")
  fi
  (cd "$WORK" && exec "${wrap[@]}" "$BIN" serve --data-dir "$DATA" --port "$PORT") \
    >>"$LOG_DIR/fluxbase-$mode.log" 2>&1 </dev/null &
  FX_PID=$!
  local deadline=$(($(date +%s) + 600))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/ready"; do
    kill -0 "$FX_PID" 2>/dev/null || { echo "error: fluxbase exited; see $LOG_DIR/fluxbase-$mode.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "error: fluxbase not ready after 600 s" >&2; exit 1; }
    sleep 0.05
  done
}
stop_fx() { stop_pid "$FX_PID"; FX_PID=''; }

start_fx on
PG="host=$DATA/pg port=5432 user=postgres dbname=postgres"
psql_q() { psql "$PG" -X -q -v ON_ERROR_STOP=1 "$@"; }
echo "creating the dataset ..." >&2
psql_q >"$LOG_DIR/dataset.log" 2>&1 <<'SQL'
CREATE TABLE items (
  id serial PRIMARY KEY,
  category int NOT NULL,
  name text NOT NULL,
  price numeric(10,2) NOT NULL,
  created_at timestamptz NOT NULL
);
INSERT INTO items (category, name, price, created_at)
SELECT g % 100, 'item ' || g, ((g * 7919) % 100000) / 100.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 100000) g;
GRANT SELECT ON items TO anon;
VACUUM ANALYZE items;
SQL
ANON=$(cd "$WORK" && "$BIN" keys show --data-dir "$DATA" 2>>"$LOG_DIR/keys.log" | awk '$1 == "anon:" { print $2 }')
[ -n "$ANON" ] || { echo "error: no anon key from \`fluxbase keys show\`" >&2; exit 1; }
stop_fx

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
URL="http://127.0.0.1:$PORT"

# run MODE ROUND : a fresh server in MODE, a correctness check, warm-up, one measured wrk run.
run() {
  local mode=$1 round=$2 f body c0 c1 load lines0 lines1 m
  start_fx "$mode"
  body=$(curl -s -H "apikey: $ANON" -H "Authorization: Bearer $ANON" "$URL/rest/v1/items?id=eq.4242")
  jq -e 'length == 1 and .[0].id == 4242' <<<"$body" >/dev/null ||
    { echo "error: GET items?id=eq.4242 answered: ${body:0:300}" >&2; exit 1; }
  m=$(curl -s -o /dev/null -w '%{http_code}' "$URL/metrics")
  if { [ "$mode" = on ] && [ "$m" != 200 ]; } || { [ "$mode" = off ] && [ "$m" = 200 ]; }; then
    echo "error: /metrics answered $m with metrics $mode" >&2
    exit 1
  fi
  BENCH_TARGET=fluxbase APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$ROOT/bench/wrk/single.lua" "$URL" \
    >"$LOG_DIR/warmup-$mode-r$round.txt" 2>&1
  f="$RAW_DIR/single-$mode-r$round.txt"
  load=$(cut -d' ' -f1 /proc/loadavg)
  lines0=$(wc -l <"$LOG_DIR/fluxbase-$mode.log")
  c0=$(cpu_ticks "$FX_PID")
  BENCH_TARGET=fluxbase APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/wrk/single.lua" "$URL" \
    >"$f" 2>&1 || { echo "error: wrk failed; see $f" >&2; exit 1; }
  c1=$(cpu_ticks "$FX_PID")
  lines1=$(wc -l <"$LOG_DIR/fluxbase-$mode.log")
  {
    echo "# mode=$mode round=$round duration_s=$DURATION loadavg_before=$load"
    echo "# server_cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
    echo "# log_lines=$((lines1 - lines0))"
  } >>"$f"
  stop_fx
}

# run_ir MODE ROUND : a fresh server under callgrind; instructions of IR_DURATION s of load.
run_ir() {
  local mode=$1 round=$2 f body n dump ir reqs
  start_fx "$mode" "$round"
  body=$(curl -s -H "apikey: $ANON" -H "Authorization: Bearer $ANON" "$URL/rest/v1/items?id=eq.4242")
  jq -e 'length == 1 and .[0].id == 4242' <<<"$body" >/dev/null ||
    { echo "error: GET items?id=eq.4242 answered: ${body:0:300}" >&2; exit 1; }
  BENCH_TARGET=fluxbase APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" \
    wrk -t1 -c"$IR_CONNECTIONS" -d5s -s "$ROOT/bench/wrk/single.lua" "$URL" \
    >"$LOG_DIR/warmup-ir-$mode-r$round.txt" 2>&1
  callgrind_control -z "$FX_PID" >/dev/null
  f="$RAW_DIR/ir-$mode-r$round.txt"
  BENCH_TARGET=fluxbase APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" \
    wrk -t1 -c"$IR_CONNECTIONS" -d"${IR_DURATION}s" -s "$ROOT/bench/wrk/single.lua" "$URL" \
    >"$f" 2>&1 || { echo "error: wrk failed; see $f" >&2; exit 1; }
  n=$(ls "$RAW_DIR"/callgrind-"$mode"-r"$round".out* 2>/dev/null | wc -l)
  callgrind_control -d "$FX_PID" >/dev/null
  for ((i = 0; i < 300; i++)); do
    [ "$(ls "$RAW_DIR"/callgrind-"$mode"-r"$round".out* 2>/dev/null | wc -l)" -gt "$n" ] && break
    sleep 0.1
  done
  dump=$(ls -t "$RAW_DIR"/callgrind-"$mode"-r"$round".out* | head -1)
  ir=$(awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$dump")
  reqs=$(awk '/requests in/ { print $1; exit }' "$f")
  echo "# mode=$mode round=$round requests=$reqs instructions=$ir dump=$(basename "$dump")" >>"$f"
  stop_fx
  [ "${KEEP_DUMPS:-0}" = 1 ] || rm -f "$RAW_DIR"/callgrind-"$mode"-r"$round".out*
  say "mode=$mode round=$round requests=$reqs instructions=$ir ir_per_req=$(awk -v i="$ir" -v r="$reqs" 'BEGIN { printf "%.0f", i / r }')"
}

# parse FILE : "rps p50_ms p99_ms non2xx socket_errors server_cpu_s log_lines"
parse() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
      return n
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    /^# server_cpu_s=/ { split($2, kv, "="); cpu = kv[2] }
    /^# log_lines=/ { split($2, kv, "="); lines = kv[2] }
    END { printf "%s %.3f %.3f %d %d %s %d\n", rps, p50, p99, non2xx, sockerr, cpu, lines }
  ' "$1"
}

if [ "$IR" = 1 ]; then
  say "# Fluxbase observability overhead in instructions, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  say "built from: $BUILT_FROM"
  say "fluxbase=$("$BIN" --version) under valgrind --tool=callgrind; per round: fresh server, 5 s warm-up, counters zeroed, wrk -t1 -c$IR_CONNECTIONS -d${IR_DURATION}s, dump"
  say "call: GET /rest/v1/items?id=eq.N (bench/wrk/single.lua), anon key; on = metrics + info access log, off = metrics off, log level error"
  say ""
  for ((r = 1; r <= ROUNDS; r++)); do
    for mode in on off; do
      echo "round $r: $mode (callgrind) ..." >&2
      run_ir "$mode" "$r"
    done
  done
  say ""
  awk '
    function med(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    /^mode=/ {
      for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
      if (kv["mode"] == "on") { on[++non] = kv["ir_per_req"] } else { off[++noff] = kv["ir_per_req"] }
    }
    END {
      mon = med(on, non); moff = med(off, noff)
      printf "## summary: instructions per request, median [min..max] over %d rounds\n", non
      printf "on:  %.0f [%.0f..%.0f]\noff: %.0f [%.0f..%.0f]\n", mon, on[1], on[non], moff, off[1], off[noff]
      printf "overhead = on/off - 1 = %.2f %% of Fluxbase'"'"'s own instructions (Postgres not counted)\n", (mon / moff - 1) * 100
    }
  ' "$OUT" | tee -a "$OUT"
  exit 0
fi

say "# Fluxbase observability overhead, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "built from: $BUILT_FROM"
say "fluxbase=$("$BIN" --version) cpus=$(nproc) wrk: -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, warm-up ${WARMUP}s after each start, rounds=$ROUNDS (on, off, on, off, ...)"
say "call: GET /rest/v1/items?id=eq.N (N random in 1..100,000, bench/wrk/single.lua), anon key"
say "on:  metrics.enabled=true  log.level=info  (defaults; log.format auto = JSON lines on stderr, redirected to a file)"
say "off: metrics.enabled=false log.level=error"
say "both: managed mode (fsync on), rate limits off, jobs off; a fresh server process per round"
say ""

for ((r = 1; r <= ROUNDS; r++)); do
  for mode in on off; do
    echo "round $r: $mode ..." >&2
    run "$mode" "$r"
    read -r rps p50 p99 non2xx sockerr cpu lines < <(parse "$RAW_DIR/single-$mode-r$r.txt")
    flag=''
    [ "$non2xx" = 0 ] && [ "$sockerr" = 0 ] || flag=' INVALID'
    say "mode=$mode round=$r rps=$rps p50_ms=$p50 p99_ms=$p99 non2xx=$non2xx socket_errors=$sockerr server_cpu_s=$cpu cpu_us_per_req=$(awk -v c="$cpu" -v r="$rps" -v d="$DURATION" 'BEGIN { printf "%.1f", c / (r * d) * 1e6 }') log_lines=$lines$flag"
  done
done

say ""
say "## summary: median [min..max] over $ROUNDS rounds"
awk '
  function med(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function stat(m, k,   n, i, a, parts) {
    n = split(vals[m SUBSEP k], parts, " ")
    for (i = 1; i <= n; i++) a[i] = parts[i] + 0
    M[m SUBSEP k] = med(a, n)
    return sprintf("%.2f [%.2f..%.2f]", M[m SUBSEP k], a[1], a[n])
  }
  /^mode=/ {
    delete kv
    for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    for (k in kv) vals[kv["mode"] SUBSEP k] = vals[kv["mode"] SUBSEP k] " " kv[k]
    if (kv["mode"] == "on") on[kv["round"]] = kv["rps"]; else off[kv["round"]] = kv["rps"]
  }
  END {
    for (m = 0; m < 2; m++) {
      mode = m ? "off" : "on"
      printf "%s: rps=%s p50_ms=%s p99_ms=%s cpu_us_per_req=%s log_lines=%s\n", mode,
        stat(mode, "rps"), stat(mode, "p50_ms"), stat(mode, "p99_ms"), stat(mode, "cpu_us_per_req"),
        stat(mode, "log_lines")
    }
    printf "overhead = 1 - median(on rps) / median(off rps) = %.2f %%\n", (1 - M["on" SUBSEP "rps"] / M["off" SUBSEP "rps"]) * 100
    printf "per-request CPU: on/off - 1 = %.2f %%\n", (M["on" SUBSEP "cpu_us_per_req"] / M["off" SUBSEP "cpu_us_per_req"] - 1) * 100
    s = ""; n = 0
    for (r in on) if (r in off) { d[++n] = (1 - on[r] / off[r]) * 100 }
    for (i = 2; i <= n; i++) { t = d[i]; for (j = i - 1; j >= 1 && d[j] > t; j--) d[j + 1] = d[j]; d[j + 1] = t }
    for (i = 1; i <= n; i++) s = s sprintf(" %.2f", d[i])
    printf "per-round overhead (1 - on/off, same round), sorted, %%:%s\n", s
  }
' "$OUT" | tee -a "$OUT"
say ""
say "server logs: on $(wc -l <"$LOG_DIR/fluxbase-on.log") lines, off $(wc -l <"$LOG_DIR/fluxbase-off.log") lines; WARN/ERROR lines: $(cat "$LOG_DIR"/fluxbase-*.log | grep -c '"level":"\(WARN\|ERROR\)"\|WARN\|ERROR' || :)"
say "raw: $RAW_DIR/  logs: $LOG_DIR/"
