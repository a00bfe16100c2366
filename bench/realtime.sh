#!/usr/bin/env bash
# Realtime benchmark (issue: realtime figures). Fluxbase's /realtime/v1/websocket against
# bench/realtime_ref.rs — a minimal server that LISTENs on the NOTIFY channel of Fluxbase's
# change trigger (fluxbase_realtime) and fans each raw payload out to every websocket (no
# protocol, no RLS; bounded outbox per socket, as Fluxbase). Load and delivery counts come
# from bench/realtime_load.rs (ids produced against ids each client received). Both servers
# use one throwaway managed cluster (fsync on) over its unix socket.
#
#   bench/realtime.sh
#
# Scenarios (S1, S2 interleaved Fluxbase/reference rounds; S3, S4 Fluxbase only; S5 both,
# each round on freshly started servers):
#   S1  public table, 1,000 subscribers, 50 inserts/s      100 % delivered, p99 <= 1.5x ref
#   S2  public table,   500 subscribers, 64 inserts/s      p95 <= 50 ms
#   S3  RLS table, 1,000 subscribers with own user JWTs, 20 inserts/s
#                                                         20,000 deliveries/s, p99 < 500 ms
#   S4  broadcast, one channel, 1,000 subscribers, 100 msgs/s from one more client
#                                                         100 % delivered, p99 < 200 ms
#   S5  5,000 idle connections, each joined to one channel: (VmRSS after - before) / 5,000
#                                                         <= 30 KB per connection
#
# Environment:
#   ROUNDS=3          rounds per scenario (>= 3)
#   SECS=20           seconds of sending per run
#   IDLE_CONNS=5000   connections of S5
#   SCENARIOS="s1 s2 s3 s4 s5"   which scenarios to run
#   FEATURES=         cargo features of the fluxbase build (e.g. mimalloc)
#   BENCH_PORT=18400  Fluxbase's port; the reference uses BENCH_PORT+10
#   PERF=             1: sample both servers with `perf record -e cpu-clock` during round 1
#                     of S1 (binaries built unstripped; reports under realtime/ as
#                     s1-<target>-perf.txt; needs perf, e.g. Debian's linux-perf)
#   CARGO_LOCK=       a lock file to hold (flock) while building, on machines shared by builds
#
# Output: RESULT lines and the summary in bench/results/<date>/realtime.txt, raw tool output
# and thread snapshots in bench/results/<date>/realtime/, server logs in
# bench/results/<date>/tmp/realtime-logs/ (git-ignored).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-20}
IDLE_CONNS=${IDLE_CONNS:-5000}
SCENARIOS=${SCENARIOS:-s1 s2 s3 s4 s5}
PORT=${BENCH_PORT:-18400}
REF_PORT=$((PORT + 10))

[ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }
# 5,000 sockets on each side plus Postgres: raise the descriptor limit as far as allowed.
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- build ------------------------------------------------------------------------------------
# Symbols change no code; PERF needs them to name functions.
[ -z "${PERF:-}" ] || export CARGO_PROFILE_RELEASE_STRIP=none
${CARGO_LOCK:+flock "$CARGO_LOCK"} nice -n 10 cargo build --release --locked --bin fluxbase \
  --example realtime_load --example realtime_ref ${FEATURES:+--features "$FEATURES"}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/fluxbase"
LOAD="$TARGET_DIR/release/examples/realtime_load"
REF="$TARGET_DIR/release/examples/realtime_ref"
BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain -- src migrations Cargo.toml Cargo.lock bench/realtime_load.rs \
  bench/realtime_ref.rs 2>/dev/null | awk '{ printf "%s%s", sep, $2; sep = " " }')
[ -z "$DIRTY" ] || BUILT_FROM+=" + uncommitted changes in: $DIRTY"

DATE=$(date +%F)
OUT_DIR="$ROOT/bench/results/$DATE"
RAW_DIR="$OUT_DIR/realtime"
LOG_DIR="$OUT_DIR/tmp/realtime-logs" # git-ignored
OUT="$OUT_DIR/realtime.txt"
mkdir -p "$RAW_DIR" "$LOG_DIR"
rm -f "$RAW_DIR"/*.txt
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
for t in psql curl awk top; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- processes --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/fbrt.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"
FX_PID=''
REF_PID=''
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
  stop_pid "$REF_PID"
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
port_free "$REF_PORT" || { echo "error: port $REF_PORT is in use (set BENCH_PORT)" >&2; exit 1; }

# Configuration from the environment alone; no background work during the measurement.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT \
  FLUXBASE_DATABASE__MANAGED__FSYNC DATABASE_URL
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_LOG__LEVEL=warn FLUXBASE_JOBS__ENABLED=false
# Every client of the load tool comes from 127.0.0.1 (up to 5,001 sockets).
export FLUXBASE_REALTIME__MAX_CONNECTIONS_PER_IP=0

FX_STARTS=0
start_fx() {
  FX_STARTS=$((FX_STARTS + 1))
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
start_ref() {
  "$REF" --port "$REF_PORT" --pg "$PG" >>"$LOG_DIR/realtime_ref.log" 2>&1 </dev/null &
  REF_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q "listening on" "$LOG_DIR/realtime_ref.log" 2>/dev/null && ! port_free "$REF_PORT" && return 0
    kill -0 "$REF_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "error: realtime_ref did not start; see $LOG_DIR/realtime_ref.log" >&2
  exit 1
}
stop_ref() { stop_pid "$REF_PID"; REF_PID=''; }

: >"$LOG_DIR/fluxbase.log"
: >"$LOG_DIR/realtime_ref.log"
start_fx
PG="host=$DATA/pg port=5432 user=postgres dbname=postgres"
psql_q() { psql "host=$DATA/pg port=5432 user=postgres dbname=postgres" -X -q -v ON_ERROR_STOP=1 "$@"; }

# --- tables -------------------------------------------------------------------------------------
psql_q >"$LOG_DIR/setup.log" 2>&1 <<'SQL'
CREATE TABLE public.bench_pub (
  id bigint PRIMARY KEY,
  sent_at bigint DEFAULT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint,
  body text
);
CREATE TABLE public.bench_rls (
  id bigint PRIMARY KEY,
  sent_at bigint DEFAULT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint,
  body text
);
ALTER TABLE public.bench_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY bench_rls_read ON public.bench_rls FOR SELECT USING (auth.uid() IS NOT NULL);
ALTER PUBLICATION supabase_realtime ADD TABLE public.bench_pub, public.bench_rls;
SQL
state=$(psql_q -At <<'SQL'
SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'fluxbase_realtime'
          AND tgrelid IN ('public.bench_pub'::regclass, 'public.bench_rls'::regclass))
    || ' ' || has_table_privilege('anon', 'public.bench_pub', 'SELECT')
    || ' ' || has_table_privilege('authenticated', 'public.bench_rls', 'SELECT');
SQL
)
[ "$state" = "2 true true" ] || {
  echo "error: setup incomplete (triggers, anon/authenticated SELECT): $state" >&2
  exit 1
}
start_ref
FX_URL="ws://127.0.0.1:$PORT"
REF_URL="ws://127.0.0.1:$REF_PORT"

# --- runs ---------------------------------------------------------------------------------------
# load SCENARIO TARGET ROUND TOOL_ARGS... : one run of the load tool; its RESULT line goes to
# $OUT prefixed with the scenario, everything else to the raw file.
load() {
  local sc=$1 target=$2 round=$3 url pid f line load1
  shift 3
  load1=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$target" = fluxbase ]; then url=$FX_URL pid=$FX_PID; else url=$REF_URL pid=$REF_PID; fi
  f="$RAW_DIR/$sc-$target-r$round.txt"
  "$LOAD" --target "$target" --url "$url" --pg "$PG" --label "$sc/r$round" \
    --cpu "server=$pid,postgres=$PG_PID+" "$@" >"$f" 2>&1 &
  LOAD_PID=$!
  # One thread snapshot of the server midway through the sending (first round only).
  if [ "$round" = 1 ]; then
    (sleep $((SECS / 2 + 5)); top -b -n1 -H -w 200 -p "$pid" | head -n 25 >"$RAW_DIR/$sc-$target-top.txt" 2>&1) &
    if [ -n "${PERF:-}" ] && [ "$sc" = s1 ]; then
      # The middle of the sending: after the joins, before the drain.
      (sleep 8; perf record -q -e cpu-clock -F 999 -g -p "$pid" -o "$LOG_DIR/$sc-$target.perf.data" -- sleep $((SECS / 2)) >/dev/null 2>&1
       perf report -q --stdio -i "$LOG_DIR/$sc-$target.perf.data" --no-children --sort dso,symbol --percent-limit 0.5 -g none 2>/dev/null | head -n 80 >"$RAW_DIR/$sc-$target-perf.txt"
       perf report -q --stdio -i "$LOG_DIR/$sc-$target.perf.data" --no-children --sort comm --percent-limit 0.5 -g none 2>/dev/null | head -n 20 >>"$RAW_DIR/$sc-$target-perf.txt") &
    fi
  fi
  wait "$LOAD_PID" || { echo "error: realtime_load failed ($sc $target r$round); see $f" >&2; tail -5 "$f" >&2; exit 1; }
  LOAD_PID=''
  curl -s "http://127.0.0.1:$PORT/metrics" | grep '^fluxbase_realtime' >>"$f" || :
  line=$(grep '^RESULT ' "$f") || { echo "error: no RESULT in $f" >&2; exit 1; }
  say "scenario=$sc round=$round ${line#RESULT } loadavg_before=$load1"
  grep '^NOTE' "$f" | sed "s/^/  $sc $target r$round: /" | tee -a "$OUT" || :
  sleep 2 # sockets close, Postgres settles
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# idle TARGET ROUND : S5 on a freshly started server.
idle() {
  local target=$1 round=$2 url pid f before after released i
  if [ "$target" = fluxbase ]; then
    stop_fx; start_fx; url=$FX_URL pid=$FX_PID
  else
    stop_ref; start_ref; url=$REF_URL pid=$REF_PID
  fi
  sleep 2
  before=$(rss_kb "$pid")
  f="$RAW_DIR/s5-$target-r$round.txt"
  : >"$f"
  "$LOAD" --mode idle --target "$target" --url "$url" --pg "$PG" --subs "$IDLE_CONNS" \
    --label "s5/r$round" >"$f" 2>&1 &
  LOAD_PID=$!
  for ((i = 0; i < 3000; i++)); do
    grep -q '^READY' "$f" && break
    kill -0 "$LOAD_PID" 2>/dev/null || { echo "error: idle load tool exited; see $f" >&2; exit 1; }
    sleep 0.1
  done
  sleep 3
  after=$(rss_kb "$pid")
  curl -s "http://127.0.0.1:$PORT/metrics" | grep '^fluxbase_realtime_c' >>"$f" || :
  stop_pid "$LOAD_PID"
  wait "$LOAD_PID" 2>/dev/null || :
  LOAD_PID=''
  sleep 3
  released=$(rss_kb "$pid")
  { echo "# after the clients closed:"; curl -s "http://127.0.0.1:$PORT/metrics" | grep '^fluxbase_realtime_c'; } >>"$f" || :
  say "scenario=s5 round=$round target=$target $(grep '^READY' "$f" | cut -d' ' -f3-) rss_before_kb=$before rss_after_kb=$after rss_after_close_kb=$released kb_per_conn=$(awk -v a="$before" -v b="$after" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (b - a) / n }')"
  grep '^NOTE' "$f" | sed "s/^/  s5 $target r$round: /" | tee -a "$OUT" || :
}

say "# Fluxbase realtime benchmark, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "built from: $BUILT_FROM"
say "fluxbase=$("$BIN" --version) cpus=$(nproc) rounds=$ROUNDS secs=$SECS ulimit_n=$(ulimit -n)"
say "database: throwaway managed cluster (fsync on); inserts by the load tool over its unix socket (4 connections, pipelined)"
say "fluxbase: managed mode, rate limits off, jobs off, log level warn; reference: bench/realtime_ref.rs (LISTEN fluxbase_realtime, raw payload to every socket)"
say "load tool: bench/realtime_load.rs, 2 threads, on the same 2 cores; cpu_*_pct = CPU time over the send+drain window (100 = one core)"
say ""

S1=(--mode changes --table bench_pub --subs 1000 --rate 50 --secs "$SECS")
S2=(--mode changes --table bench_pub --subs 500 --rate 64 --secs "$SECS")
S3=(--mode changes --table bench_rls --subs 1000 --rate 20 --secs "$SECS" --user-tokens)
S4=(--mode broadcast --subs 1000 --rate 100 --secs "$SECS")

echo "warming up (S1 for 5 s on each server) ..." >&2
for target in fluxbase ref; do
  "$LOAD" --target "$target" --url "$([ $target = fluxbase ] && echo "$FX_URL" || echo "$REF_URL")" \
    --pg "$PG" --mode changes --table bench_pub --subs 1000 --rate 50 --secs 5 \
    >"$LOG_DIR/warmup-$target.txt" 2>&1 || { echo "error: warm-up failed; see $LOG_DIR/warmup-$target.txt" >&2; exit 1; }
  sleep 2
done

want() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for ((r = 1; r <= ROUNDS; r++)); do
  if want s1; then for target in fluxbase ref; do load s1 "$target" "$r" "${S1[@]}"; done; fi
  if want s2; then for target in fluxbase ref; do load s2 "$target" "$r" "${S2[@]}"; done; fi
  if want s3; then load s3 fluxbase "$r" "${S3[@]}"; fi
  if want s4; then load s4 fluxbase "$r" "${S4[@]}"; fi
done
if want s5; then
  for ((r = 1; r <= ROUNDS; r++)); do
    for target in fluxbase ref; do idle "$target" "$r"; done
  done
fi

# --- summary ------------------------------------------------------------------------------------
say ""
say "## summary: median [min..max] over $ROUNDS rounds"
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
    g = kv["scenario"] " " kv["target"]
    if (!(g in seen)) { seen[g] = 1; order[++ng] = g }
    for (k in kv) vals[g SUBSEP k] = vals[g SUBSEP k] " " kv[k]
  }
  END {
    for (i = 1; i <= ng; i++) {
      g = order[i]
      if (g ~ /^s5 /) {
        printf "%s: kb_per_conn=%s rss_before_kb=%s rss_after_kb=%s rss_after_close_kb=%s\n", g,
          stat(g SUBSEP "kb_per_conn"), stat(g SUBSEP "rss_before_kb"), stat(g SUBSEP "rss_after_kb"),
          stat(g SUBSEP "rss_after_close_kb")
        continue
      }
      printf "%s: delivered_pct=%s p50_ms=%s p95_ms=%s p99_ms=%s max_ms=%s deliveries_per_s=%s actual_rate=%s dups=%s closed_early=%s cpu_server_pct=%s cpu_postgres_pct=%s cpu_tool_pct=%s\n", g,
        stat(g SUBSEP "delivered_pct"), stat(g SUBSEP "p50_ms"), stat(g SUBSEP "p95_ms"),
        stat(g SUBSEP "p99_ms"), stat(g SUBSEP "max_ms"), stat(g SUBSEP "deliveries_per_s"),
        stat(g SUBSEP "actual_rate"), stat(g SUBSEP "dups"), stat(g SUBSEP "closed_early"),
        stat(g SUBSEP "cpu_server_pct"), stat(g SUBSEP "cpu_postgres_pct"), stat(g SUBSEP "cpu_tool_pct")
    }
  }
' "$OUT" | tee -a "$OUT"
# p99 ratio of S1 per round (Fluxbase / reference, same round).
awk '
  /^scenario=s1 / { for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    r[kv["round"] SUBSEP kv["target"]] = kv["p99_ms"]; rounds[kv["round"]] = 1 }
  END { for (k in rounds) if ((k SUBSEP "ref") in r && r[k SUBSEP "ref"] > 0)
          printf "s1 round %s: p99 ratio fluxbase/ref = %.2f\n", k, r[k SUBSEP "fluxbase"] / r[k SUBSEP "ref"] }
' "$OUT" | sort | tee -a "$OUT"
say ""
say "fluxbase log: $(grep -c . "$LOG_DIR/fluxbase.log" || :) lines ($(grep -ci 'warn' "$LOG_DIR/fluxbase.log" || :) WARN, $(grep -ci 'error' "$LOG_DIR/fluxbase.log" || :) ERROR); first lines:"
grep -i 'warn\|error' "$LOG_DIR/fluxbase.log" | head -n 5 | cut -c1-300 | sed 's/^/  /' | tee -a "$OUT" || :
say "reference log: $(grep -c 'slow sockets' "$LOG_DIR/realtime_ref.log" || :) slow-socket drop lines"
say "raw: $RAW_DIR/  logs: $LOG_DIR/"
