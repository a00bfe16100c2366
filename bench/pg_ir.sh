#!/usr/bin/env bash
# Postgres's instructions per transaction for REST statement shapes, counted exactly:
# a throwaway cluster runs under valgrind's callgrind (every backend it forks is traced),
# pgbench sends each script over one prepared-mode connection, and the instructions of that
# backend for a 600- and a 100-transaction run are subtracted (start-up and exit cancel out),
# divided by 500. Load-independent (ARCHITECTURE §8 on small differences), so it can run
# while the machine is busy. The scripts (bench/pg_ir/*.sql) are the statements Fluxbase
# and the reference server send for the single-row GET and the minimal insert of
# bench/rest.sh, on its dataset.
#
#   bench/pg_ir.sh [bench/pg_ir/NAME.sql ...]     (default: every script)
#
# Output: bench/results/<date>/pg_ir.txt. KEEP_DIR=DIR keeps each backend's callgrind file
# there (NAME.100.cg, NAME.600.cg) to compare with callgrind_annotate. Needs valgrind, pgbench and the PostgreSQL server
# binaries (pg_config --bindir); run as root it uses the `postgres` user for the cluster.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$PGBIN/postgres" ] || PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
for t in valgrind pgbench psql; do
  command -v "$t" >/dev/null || { echo "error: $t is missing" >&2; exit 1; }
done
if [ "$#" -gt 0 ]; then SCRIPTS=("$@"); else SCRIPTS=(bench/pg_ir/*.sql); fi
OUT_DIR="bench/results/$(date +%F)"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/pg_ir.txt"

WORK=$(mktemp -d /tmp/fbpgir.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
PGPID=""
cleanup() {
  [ -n "$PGPID" ] && kill -INT "$PGPID" 2>/dev/null && sleep 3
  rm -rf "$WORK"
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1
as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
  "$PGBIN/postgres" -D "$WORK/data" -p 5499 -k "$WORK" -c listen_addresses='' \
  -c autovacuum=off -c shared_buffers=128MB >"$WORK/pg.log" 2>&1 &
PGPID=$!
U=(-h "$WORK" -p 5499 -U postgres)
for _ in $(seq 1 120); do psql "${U[@]}" -XAtqc 'select 1' postgres >/dev/null 2>&1 && break; sleep 1; done

# The REST benchmark's dataset (the SQL between the heredoc markers in bench/rest.sh), and
# the anon role with what the migration's default privileges give it.
sed -n '/^psql_q <<.SQL. >"\$LOG_DIR\/dataset.log"/,/^SQL$/p' bench/rest.sh | sed '1d;$d' \
  >"$WORK/dataset.sql"
psql "${U[@]}" -X -q -v ON_ERROR_STOP=1 -f "$WORK/dataset.sql" postgres >/dev/null
psql "${U[@]}" -X -q -v ON_ERROR_STOP=1 postgres <<'SQL'
CREATE ROLE anon NOLOGIN;
GRANT anon TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO anon;
SQL

# ir_of SCRIPT N: the instructions of the backend that served N transactions of SCRIPT:
# the largest of the dumps written since (a backend's dump appears when it exits, so an
# earlier short-lived connection's may arrive late; it is far smaller).
ir_of() {
  local before after n0 n1
  before=$(ls "$WORK"/cg.* 2>/dev/null | sort || true)
  pgbench -n -M prepared -c 1 -j 1 -t "$2" -f "$1" "${U[@]}" postgres >"$WORK/pgbench.log" 2>&1 ||
    { cat "$WORK/pgbench.log" >&2; exit 1; }
  n0=-1
  for _ in $(seq 1 60); do
    sleep 1
    n1=$(ls "$WORK"/cg.* | wc -l)
    [ "$n1" = "$n0" ] && break
    n0=$n1
  done
  after=$(ls "$WORK"/cg.* | sort)
  comm -13 <(echo "$before") <(echo "$after") | while read -r f; do
    echo "$(awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$f") $f"
  done | sort -n | tail -1 | {
    read -r ir f
    # KEEP_DIR: keep each measured backend's callgrind file (NAME.N.cg) for callgrind_annotate.
    [ -z "${KEEP_DIR:-}" ] || cp "$f" "$KEEP_DIR/$(basename "$1" .sql).$2.cg"
    echo "$ir"
  }
}
{
  echo "# Postgres instructions per transaction (callgrind on the backend), $(date -u +%FT%TZ)"
  echo "# $("$PGBIN/postgres" --version); pgbench -M prepared -c1; (Ir(600 tx) - Ir(100 tx)) / 500"
  for s in "${SCRIPTS[@]}"; do
    a=$(ir_of "$s" 100)
    b=$(ir_of "$s" 600)
    printf '%-40s %8d\n' "$(basename "$s" .sql)" $(((b - a) / 500))
  done
} | tee "$OUT"
