#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests from GET /openapi.json (every registry route
# plus the REST paths of a small fixture schema) and runs them against a release build on a
# throwaway managed data directory, with the service_role key. Not part of `make test`/CI:
# it is slow and randomised; run it after changing routes or request parsing.
#
#   make fuzz-api            (or scripts/fuzz-api.sh)
#
# Environment:
#   FUZZ_PORT=18480          the server's HTTP port
#   FUZZ_MAX_TIME=180        seconds of schemathesis (all phases share it)
#   FUZZ_WORKERS=2           schemathesis workers
#   FUZZ_CHECKS=...          schemathesis checks (default below)
#   FUZZ_SEED=               a seed to replay a run
#
# Output: the schemathesis summary on stdout; the server log and the NDJSON report under
# target/fuzz-api/. Exits non-zero when schemathesis reports a failure.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PORT=${FUZZ_PORT:-18480}
MAX_TIME=${FUZZ_MAX_TIME:-180}
WORKERS=${FUZZ_WORKERS:-2}
CHECKS=${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance}
OUT="$ROOT/target/fuzz-api"
VENV="$ROOT/target/fuzz-venv"
mkdir -p "$OUT"

for t in curl psql python3; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- tools ------------------------------------------------------------------------------------
# CARGO may carry a wrapper (e.g. "flock LOCK nice cargo" on shared machines).
${CARGO:-cargo} build --release --locked --bin fluxbase
BIN="$ROOT/target/release/fluxbase"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV ..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
"$VENV/bin/schemathesis" --version

# --- server -----------------------------------------------------------------------------------
# Short path (unix socket limits) that the `postgres` OS user can traverse when run as root.
WORK=$(mktemp -d /tmp/fbfuzz.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"
FX_PID=''
cleanup() {
  local pgpid i
  if [ -n "$FX_PID" ]; then
    kill -TERM "$FX_PID" 2>/dev/null || :
    # SIGTERM makes fluxbase stop its managed Postgres; give it the time to.
    for ((i = 0; i < 600; i++)); do kill -0 "$FX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FX_PID" 2>/dev/null || :
  fi
  # A killed fluxbase leaves its managed Postgres behind: fast-stop (SIGINT) it.
  if [ -f "$DATA/pg/postmaster.pid" ] && read -r pgpid <"$DATA/pg/postmaster.pid"; then
    kill -INT "$pgpid" 2>/dev/null || :
    for ((i = 0; i < 300; i++)); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rc=0
curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" || rc=$?
[ "$rc" -eq 7 ] || { echo "error: port $PORT is in use (set FUZZ_PORT)" >&2; exit 1; }

# Configuration from the environment alone. Rate limits off: the fuzzer is one client
# sending thousands of requests, and 429s would hide everything behind them.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT DATABASE_URL
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_LOG__LEVEL=warn
(cd "$WORK" && exec "$BIN" serve --data-dir "$DATA" --port "$PORT") >"$OUT/fluxbase.log" 2>&1 </dev/null &
FX_PID=$!
deadline=$(($(date +%s) + 180))
until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/ready"; do
  kill -0 "$FX_PID" 2>/dev/null || { echo "error: the server exited; see $OUT/fluxbase.log" >&2; tail -n 20 "$OUT/fluxbase.log" >&2; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "error: /ready not answering after 180 s" >&2; exit 1; }
  sleep 0.1
done

# --- fixture ----------------------------------------------------------------------------------
PGURL="postgresql://postgres@$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$DATA/pg"):5432/postgres"
psql "$PGURL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, born int);
CREATE TABLE books (
  id serial PRIMARY KEY, title text NOT NULL, year smallint, author_id int REFERENCES authors (id),
  tags text[] DEFAULT '{}', meta jsonb, price numeric(10,2), published timestamptz, isbn uuid);
INSERT INTO authors (name, born) VALUES ('Ursula', 1929), ('Terry', 1948);
INSERT INTO books (title, year, author_id) VALUES ('The Dispossessed', 1974, 1), ('Small Gods', 1992, 2);
CREATE VIEW book_titles AS SELECT id, title FROM books;
CREATE FUNCTION add(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION books_after(y int) RETURNS SETOF books LANGUAGE sql STABLE AS 'SELECT * FROM books WHERE year > y';
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated, service_role;
NOTIFY pgrst, 'reload schema';
SQL
deadline=$(($(date +%s) + 30))
until curl -sf "http://127.0.0.1:$PORT/openapi.json" | grep -q '"/rest/v1/rpc/books_after"'; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "error: the fixture never reached /openapi.json" >&2; exit 1; }
  sleep 0.2
done
SERVICE_KEY=$(cd "$WORK" && "$BIN" keys show --data-dir "$DATA" | awk '/^service_role:/ { print $2 }')
[ -n "$SERVICE_KEY" ] || { echo "error: no service_role key from 'fluxbase keys show'" >&2; exit 1; }

# --- fuzz -------------------------------------------------------------------------------------
args=(run "http://127.0.0.1:$PORT/openapi.json"
  -H "apikey: $SERVICE_KEY" -H "Authorization: Bearer $SERVICE_KEY"
  --checks "$CHECKS" --max-time "$MAX_TIME" --workers "$WORKERS" --request-timeout 10
  --continue-on-failure --report ndjson --report-dir "$OUT"
  # TUS bodies are application/offset+octet-stream, which schemathesis cannot generate: the
  # resumable-upload operations are covered by tests/it/storage_tus.rs and tus-js-client.
  --exclude-path-regex '/upload/resumable')
[ -z "${FUZZ_SEED:-}" ] || args+=(--seed "$FUZZ_SEED")
status=0
# From $OUT: schemathesis keeps a `.schemathesis/` cache in its working directory.
(cd "$OUT" && "$VENV/bin/schemathesis" "${args[@]}") || status=$?
if grep -q 'panicked' "$OUT/fluxbase.log"; then
  echo "error: the server log records a panic (see $OUT/fluxbase.log)" >&2
  status=1
fi
kill -0 "$FX_PID" 2>/dev/null || { echo "error: the server died during the run" >&2; status=1; }
exit "$status"
