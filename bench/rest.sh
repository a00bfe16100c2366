#!/usr/bin/env bash
# REST benchmark (issue: REST engine figures): Fluxbase's /rest/v1 against a hand-written
# actix-web + deadpool-postgres reference (bench/ref_server.rs) serving the same five calls
# with fixed prepared SQL and JSON built in Postgres, plus GET /health as the static-handler
# reference. Both run against the same throwaway managed cluster (fsync on) over its unix
# socket, measured with wrk in interleaved rounds (Fluxbase, reference, Fluxbase, ...).
#
#   bench/rest.sh
#
# Environment:
#   DURATION=10        seconds per measured wrk run
#   ROUNDS=3           interleaved rounds per call (>= 3)
#   WARMUP=2           seconds of unrecorded wrk per call and server before the rounds
#   CONNECTIONS=50 THREADS=2   wrk settings
#   BENCH_PORT=18080   Fluxbase's HTTP port; the reference uses BENCH_PORT+10
#   FLUXBASE_BIN=      the fluxbase binary to measure (default target/release/fluxbase)
#   CALLS="single list" only these calls (default: all six)
#
# Calls (Fluxbase URL -> reference URL; ids and categories vary per request, bench/wrk/*.lua):
#   single  GET /rest/v1/items?id=eq.N                                  -> GET /items/N
#   list    GET /rest/v1/items?category=eq.C&order=created_at.desc&limit=20 -> GET /items?category=C
#   embed   GET /rest/v1/authors?id=eq.N&select=*,books(*)              -> GET /authors/N
#   insert  POST /rest/v1/events, Prefer: return=minimal, JSON object    -> POST /events
#   rpc     GET /rest/v1/rpc/recent_items?cat=C                         -> GET /rpc/recent_items?cat=C
#   health  GET /health                                                 -> GET /health
#
# Output: raw wrk output in bench/results/<date>/rest/, the summary in
# bench/results/<date>/rest.txt, server logs in bench/results/<date>/tmp/rest-logs/.
# A run where wrk reports non-2xx responses or socket errors is flagged INVALID.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
PORT=${BENCH_PORT:-18080}
REF_PORT=$((PORT + 10))
read -r -a CALLS <<<"${CALLS:-single list embed insert rpc health}"

[ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }

# --- build and tools ------------------------------------------------------------------------
nice -n 10 cargo build --release --locked --bin fluxbase --example ref_server
# FLUXBASE_BIN: measure another fluxbase binary (e.g. a copy built from another commit)
# against the same reference.
TGT="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${FLUXBASE_BIN:-$TGT/release/fluxbase}"
REF="$TGT/release/examples/ref_server"
# What was built: the commit and any uncommitted change to what goes into the binaries.
BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain -- src migrations Cargo.toml Cargo.lock bench/ref_server.rs 2>/dev/null |
  awk '{ printf "%s%s", sep, $2; sep = " " }')
[ -z "$DIRTY" ] || BUILT_FROM+=" + uncommitted changes in: $DIRTY"

DATE=$(date +%F)
OUT_DIR="$ROOT/bench/results/$DATE"
RAW_DIR="$OUT_DIR/rest"
LOG_DIR="$OUT_DIR/tmp/rest-logs" # git-ignored
OUT="$OUT_DIR/rest.txt"
mkdir -p "$RAW_DIR" "$LOG_DIR"
rm -f "$RAW_DIR"/*.txt
: >"$OUT"

say() { echo "$*" | tee -a "$OUT"; }


if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk not found; installing it with apt-get" >&2
  { apt-get update && apt-get install -y wrk; } >"$LOG_DIR/apt.log" 2>&1 || {
    echo "error: could not install wrk with apt-get (see $LOG_DIR/apt.log); install wrk and rerun" >&2
    exit 1
  }
  command -v wrk >/dev/null 2>&1 || { echo "error: wrk still not found after apt-get" >&2; exit 1; }
fi
for t in psql curl awk; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- processes --------------------------------------------------------------------------------
# Short path (unix socket limits) that the `postgres` OS user can traverse when run as root.
WORK=$(mktemp -d /tmp/fbrest.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"

FX_PID=''
REF_PID=''
cleanup() {
  local pid pgpid f i
  for pid in $REF_PID $FX_PID; do kill -TERM "$pid" 2>/dev/null || :; done
  # SIGTERM makes fluxbase stop its managed Postgres; give it the time to.
  for pid in $REF_PID $FX_PID; do
    for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || :
  done
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

# wait_http URL PID LOG TIMEOUT_S : polls URL until 200.
wait_http() {
  local url=$1 pid=$2 log=$3 deadline=$(($(date +%s) + $4))
  until curl -sf -o /dev/null --max-time 2 "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the server exited before $url answered; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: $url not answering after $4 s; see $log" >&2
      exit 1
    fi
    sleep 0.05
  done
}

port_free "$PORT" || { echo "error: port $PORT is in use (set BENCH_PORT)" >&2; exit 1; }
port_free "$REF_PORT" || { echo "error: port $REF_PORT is in use (set BENCH_PORT)" >&2; exit 1; }

# Configuration from the environment alone: no ./fluxbase.yaml (the server runs in $WORK), no
# inherited database URL or config file. No background work during the measurement.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT \
  FLUXBASE_DATABASE__MANAGED__FSYNC DATABASE_URL
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_LOG__LEVEL=warn FLUXBASE_JOBS__ENABLED=false

(cd "$WORK" && exec "$BIN" serve --data-dir "$DATA" --port "$PORT") >"$LOG_DIR/fluxbase.log" 2>&1 </dev/null &
FX_PID=$!
wait_http "http://127.0.0.1:$PORT/ready" "$FX_PID" "$LOG_DIR/fluxbase.log" 180

PGURL="postgresql://postgres@$(pct "$DATA/pg"):5432/postgres"
psql_q() { psql "$PGURL" -X -q -v ON_ERROR_STOP=1 "$@"; }

# --- dataset --------------------------------------------------------------------------------
echo "creating the dataset ..." >&2
psql_q <<'SQL' >"$LOG_DIR/dataset.log" 2>&1
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
CREATE INDEX items_category_created_at ON items (category, created_at DESC);

CREATE TABLE authors (
  id serial PRIMARY KEY,
  name text NOT NULL,
  bio text
);
INSERT INTO authors (name, bio)
SELECT 'author ' || g, 'Biography of author ' || g FROM generate_series(1, 10000) g;

CREATE TABLE books (
  id serial PRIMARY KEY,
  author_id int NOT NULL REFERENCES authors (id),
  title text NOT NULL,
  year int NOT NULL
);
INSERT INTO books (author_id, title, year)
SELECT (g - 1) / 10 + 1, 'book ' || g, 1900 + g % 125 FROM generate_series(1, 100000) g;
CREATE INDEX books_author_id ON books (author_id);

CREATE TABLE events (
  id bigserial PRIMARY KEY,
  kind text NOT NULL,
  payload jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION recent_items(cat int) RETURNS SETOF items
LANGUAGE sql STABLE AS $$
  SELECT * FROM items WHERE category = cat ORDER BY created_at DESC LIMIT 20
$$;

VACUUM ANALYZE items;
VACUUM ANALYZE authors;
VACUUM ANALYZE books;
VACUUM ANALYZE events;
SQL

# The migration's default privileges (GRANT ALL ON TABLES/SEQUENCES, EXECUTE ON FUNCTIONS in
# public to the API roles) apply to objects `postgres` creates: check rather than assume.
privs=$(psql_q -At <<'SQL'
SELECT has_table_privilege('anon', 'public.items', 'SELECT')
   AND has_table_privilege('anon', 'public.authors', 'SELECT')
   AND has_table_privilege('anon', 'public.books', 'SELECT')
   AND has_table_privilege('anon', 'public.events', 'INSERT')
   AND has_sequence_privilege('anon', 'public.events_id_seq', 'USAGE')
   AND has_function_privilege('anon', 'public.recent_items(int)', 'EXECUTE');
SQL
)
if [ "$privs" = t ]; then
  GRANTS="anon privileges come from the migration's default privileges (no GRANT needed)"
else
  psql_q <<'SQL' >>"$LOG_DIR/dataset.log" 2>&1
GRANT SELECT ON items, authors, books TO anon;
GRANT INSERT ON events TO anon;
GRANT USAGE ON SEQUENCE events_id_seq TO anon;
GRANT EXECUTE ON FUNCTION recent_items(int) TO anon;
SQL
  GRANTS="default privileges did NOT cover the dataset: explicit GRANTs to anon were needed"
fi
psql_q -c "NOTIFY pgrst, 'reload schema'" >/dev/null
sleep 2

ANON=$(cd "$WORK" && "$BIN" keys show --data-dir "$DATA" 2>>"$LOG_DIR/keys.log" | awk '$1 == "anon:" { print $2 }')
[ -n "$ANON" ] || { echo "error: no anon key from \`fluxbase keys show\`; see $LOG_DIR/keys.log" >&2; exit 1; }

DATABASE_URL="$PGURL" PORT="$REF_PORT" "$REF" >"$LOG_DIR/ref_server.log" 2>&1 </dev/null &
REF_PID=$!
wait_http "http://127.0.0.1:$REF_PORT/health" "$REF_PID" "$LOG_DIR/ref_server.log" 60

FX="http://127.0.0.1:$PORT"
RF="http://127.0.0.1:$REF_PORT"

# --- correctness: each call once on both; Fluxbase must give the reference's JSON -----------
CHECK_LOG="$LOG_DIR/check.log"
: >"$CHECK_LOG"
BAD=0
# fetch NAME EXPECTED_STATUS CURL_ARGS... : sets BODY and STATUS.
fetch() {
  local name=$1 want=$2 f="$WORK/body"; shift 2
  STATUS=$(curl -s -o "$f" -w '%{http_code}' --max-time 10 -H "apikey: $ANON" \
    -H "Authorization: Bearer $ANON" "$@")
  BODY=$(cat "$f")
  printf '%s: %s %s\n' "$name" "$STATUS" "$BODY" >>"$CHECK_LOG"
  if [ "$STATUS" != "$want" ]; then
    echo "FAIL $name: HTTP $STATUS (expected $want); body: $BODY" >&2
    BAD=1
    return 1
  fi
}
# same NAME FX_URL REF_URL JQ_CHECK : both 200, same JSON, and the check holds.
same() {
  local name=$1 fxb rfb
  fetch "$name fluxbase" 200 "$FX$2" || return 0
  fxb=$BODY
  fetch "$name ref" 200 "$RF$3" || return 0
  rfb=$BODY
  if [ "$fxb" != "$rfb" ]; then
    echo "FAIL $name: Fluxbase's body differs from the reference's" >&2
    echo "  fluxbase:  ${fxb:0:600}" >&2
    echo "  reference: ${rfb:0:600}" >&2
    BAD=1
  elif ! jq -e "$4" <<<"$fxb" >/dev/null; then
    echo "FAIL $name: body fails the check \`$4\`: ${fxb:0:600}" >&2
    BAD=1
  else
    echo "ok   $name ($(printf '%s' "$fxb" | wc -c) bytes)" >&2
  fi
}
same single "/rest/v1/items?id=eq.4242" "/items/4242" \
  'length == 1 and .[0].id == 4242 and .[0].category == 42 and .[0].name == "item 4242"'
same list "/rest/v1/items?category=eq.7&order=created_at.desc&limit=20" "/items?category=7" \
  'length == 20 and all(.[]; .category == 7) and ([.[].created_at] == ([.[].created_at] | sort | reverse))'
same embed "/rest/v1/authors?id=eq.42&select=*,books(*)" "/authors/42" \
  'length == 1 and .[0].id == 42 and (.[0].books | length) == 10 and all(.[0].books[]; .author_id == 42)'
same rpc "/rest/v1/rpc/recent_items?cat=7" "/rpc/recent_items?cat=7" \
  'length == 20 and all(.[]; .category == 7)'
same health "/health" "/health" '.status == "ok"'
for t in fluxbase ref; do
  if [ $t = fluxbase ]; then url="$FX/rest/v1/events"; else url="$RF/events"; fi
  if fetch "insert $t" 201 -X POST -H 'Content-Type: application/json' -H 'Prefer: return=minimal' \
    --data "{\"kind\":\"check\",\"payload\":{\"by\":\"$t\",\"n\":1}}" "$url"; then
    got=$(psql_q -At -c "SELECT count(*) FROM events WHERE kind = 'check' AND payload = '{\"by\":\"$t\",\"n\":1}'")
    if [ -n "$BODY" ] || [ "$got" != 1 ]; then
      echo "FAIL insert $t: body '${BODY:0:200}' (expected none), rows stored: $got (expected 1)" >&2
      BAD=1
    else
      echo "ok   insert $t (201, empty body, row stored)" >&2
    fi
  fi
done
[ "$BAD" = 0 ] || { echo "error: a call is not served correctly; nothing measured (see $CHECK_LOG)" >&2; exit 1; }

# --- measurement ------------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU ticks of every postgres process (the cluster serves only the server under load; its
# pooled backends live through the run, so before/after differences count their work).
pg_ticks() {
  local t=0 p v
  for p in $(pgrep -x postgres); do
    v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

# run CALL TARGET ROUND DURATION FILE : one wrk run; appends the server's CPU time to FILE.
run() {
  local call=$1 target=$2 round=$3 dur=$4 file=$5 url pid c0 c1 g0 g1 load
  if [ "$target" = fluxbase ]; then url=$FX pid=$FX_PID; else url=$RF pid=$REF_PID; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_ticks "$pid")
  g0=$(pg_ticks)
  BENCH_TARGET=$target APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${dur}s" --latency -s "$ROOT/bench/wrk/$call.lua" "$url" \
    >"$file" 2>&1 || { echo "error: wrk failed for $call $target; see $file" >&2; exit 1; }
  c1=$(cpu_ticks "$pid")
  g1=$(pg_ticks)
  {
    echo "# call=$call target=$target round=$round duration_s=$dur loadavg_before=$load"
    echo "# server_cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
    echo "# postgres_cpu_s=$(awk -v a="$g0" -v b="$g1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
  } >>"$file"
}

# parse FILE : "rps p99_ms non2xx socket_errors timeouts requests server_cpu_s"
parse() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
      if (u == "m") return n * 60000; return n
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8; timeouts = $10 }
    / requests in / { reqs = $1 }
    /^# server_cpu_s=/ { split($2, kv, "="); cpu = kv[2] }
    /^# postgres_cpu_s=/ { split($2, kv, "="); pgcpu = kv[2] }
    END { printf "%s %.3f %d %d %d %d %s %s\n", rps, p99, non2xx, sockerr, timeouts, reqs, cpu, pgcpu }
  ' "$1"
}

say "# Fluxbase REST benchmark, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "built from: $BUILT_FROM"
say "fluxbase=$("$BIN" --version) cpus=$(nproc) wrk: -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, warm-up ${WARMUP}s, rounds=$ROUNDS"
say "database: throwaway managed cluster (fsync on), both servers over its unix socket, pool 16 each"
say "fluxbase: managed mode, rate limits off, jobs off (no background work), log level warn"
say "reference: bench/ref_server.rs (fixed prepared SQL, JSON built in Postgres, no role/claims, no tx)"
say "dataset: items 100,000; authors 10,000; books 100,000 (10 per author); $GRANTS"
say ""

echo "warming up (${WARMUP}s per call and server) ..." >&2
for call in "${CALLS[@]}"; do
  for target in fluxbase ref; do
    run "$call" "$target" 0 "$WARMUP" "$LOG_DIR/warmup-$call-$target.txt"
  done
done

for ((r = 1; r <= ROUNDS; r++)); do
  for call in "${CALLS[@]}"; do
    for target in fluxbase ref; do
      f="$RAW_DIR/$call-$target-r$r.txt"
      run "$call" "$target" "$r" "$DURATION" "$f"
      read -r rps p99 non2xx sockerr timeouts reqs cpu pgcpu < <(parse "$f")
      line=$(printf 'round=%d call=%-6s target=%-8s rps=%s p99_ms=%s requests=%s non2xx=%s socket_errors=%s timeouts=%s server_cpu_s=%s postgres_cpu_s=%s' \
        "$r" "$call" "$target" "$rps" "$p99" "$reqs" "$non2xx" "$sockerr" "$timeouts" "$cpu" "$pgcpu")
      say "$line"
    done
  done
done

events=$(psql_q -At -c "SELECT count(*) FROM events WHERE kind = 'bench'")

say ""
awk -f "$ROOT/bench/rest_summary.awk" "$OUT" | tee -a "$OUT"
say "events inserted by the insert runs: $events"
say ""
say "raw wrk output: $RAW_DIR/"
say "summary: $OUT"
