#!/usr/bin/env bash
# Where Postgres' share of a REST read goes: pgbench (-M prepared, so each statement is one
# Bind/Execute/Sync, as tokio-postgres sends it) runs, interleaved, the single-row read of
# bench/rest.sh in three shapes against the same table:
#
#   ref    the reference server's statement alone (bench/ref_server.rs)
#   stmt   Fluxbase's generated statement alone (no transaction, no role/claims)
#   full   what Fluxbase sends per request: BEGIN READ ONLY; the role/claims setup
#          (src/db/tx.rs SETUP_SQL, with a typical headers JSON); the statement; COMMIT,
#          each waited for (pgbench runs a script's statements one after another)
#   pipe4  the same four statements in one pipeline (\startpipeline … \endpipeline: one
#          round trip and ONE Sync; tokio-postgres pipelines them too, but with a Sync each)
#   pipe2  setup + statement in one pipeline with one Sync and no BEGIN/COMMIT: the implicit
#          transaction of a pipeline keeps set_config(…, true) for the statement (the
#          "one Sync per request" step of docs/benchmarks.md)
#
# and reports transactions/s and Postgres CPU per transaction for each. No HTTP, no Fluxbase
# process: only Postgres' own cost of each shape.
#
#   bench/rest_pg.sh            # BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#
# Environment: ROUNDS=3 DURATION=8 CLIENTS=8 (pgbench -c, with -j 2).
# The script creates and drops a scratch database `fluxbase_rest_pg` and a role
# `fluxbase_bench_anon` (NOLOGIN) on that server; it needs a superuser URL.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
URL=${BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-8}
DB=fluxbase_rest_pg
for t in psql pgbench awk; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done
DBURL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$URL" "$DB")
OUT_DIR="$ROOT/bench/results/$(date +%F)"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/rest_pg.txt"
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; psql "$URL" -X -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || :' EXIT

psql "$URL" -X -q -v ON_ERROR_STOP=1 <<SQL
DROP DATABASE IF EXISTS $DB;
CREATE DATABASE $DB;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fluxbase_bench_anon') THEN
    CREATE ROLE fluxbase_bench_anon NOLOGIN;
  END IF;
END \$\$;
SQL
psql "$DBURL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE items (
  id serial PRIMARY KEY, category int NOT NULL, name text NOT NULL,
  price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO items (category, name, price, created_at)
SELECT g % 100, 'item ' || g, ((g * 7919) % 100000) / 100.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 100000) g;
GRANT USAGE ON SCHEMA public TO fluxbase_bench_anon;
GRANT SELECT ON items TO fluxbase_bench_anon;
VACUUM ANALYZE items;
SQL

cat >"$WORK/ref.sql" <<'SQL'
\set id random(1, 100000)
SELECT coalesce(json_agg(_t), '[]')::text FROM (SELECT i.* FROM public.items AS i WHERE i.id = :id) _t;
SQL
# Fluxbase's statement for GET /rest/v1/items?id=eq.N (src/rest/sql.rs `read`), the value
# bound as text and cast in SQL as Fluxbase binds it.
STMT="SELECT NULL::int8 AS total, count(_fx_t)::int8 AS n, coalesce(json_agg(_fx_t), '[]')::text AS body, current_setting('response.status', true) AS status, current_setting('response.headers', true) AS headers FROM (SELECT \"items\".\"id\", \"items\".\"category\", \"items\".\"name\", \"items\".\"price\", \"items\".\"created_at\" FROM \"public\".\"items\" AS \"items\" WHERE \"items\".\"id\" = CAST((:id)::text AS int4)) _fx_t;"
printf '\\set id random(1, 100000)\n%s\n' "$STMT" >"$WORK/stmt.sql"
HEADERS='{"host":"127.0.0.1:18080","apikey":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6ImZsdXhiYXNlIiwiaWF0IjoxNzY0OTk4NDAwLCJleHAiOjIwODAzNTg0MDB9.c2lnbmF0dXJl","authorization":"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6ImZsdXhiYXNlIiwiaWF0IjoxNzY0OTk4NDAwLCJleHAiOjIwODAzNTg0MDB9.c2lnbmF0dXJl"}'
cat >"$WORK/full.sql" <<SQL
\\set id random(1, 100000)
BEGIN READ ONLY;
SELECT set_config('role', 'fluxbase_bench_anon', true), set_config('request.jwt.claims', '{"exp":2080358400,"iat":1764998400,"iss":"fluxbase","role":"anon"}', true), set_config('request.method', 'GET', true), set_config('request.path', '/rest/v1/items', true), set_config('request.headers', '$HEADERS', true), set_config('request.cookies', '{}', true);
$STMT
COMMIT;
SQL

# pgbench connects anew per run: backends exit before the second sample, and their CPU is then
# in the postmaster's cutime/cstime (fields 16, 17), which is why those are added.
SETUP="SELECT set_config('role', 'fluxbase_bench_anon', true), set_config('request.jwt.claims', '{\"exp\":2080358400,\"iat\":1764998400,\"iss\":\"fluxbase\",\"role\":\"anon\"}', true), set_config('request.method', 'GET', true), set_config('request.path', '/rest/v1/items', true), set_config('request.headers', '$HEADERS', true), set_config('request.cookies', '{}', true);"
printf '\\set id random(1, 100000)\n\\startpipeline\nBEGIN READ ONLY;\n%s\n%s\nCOMMIT;\n\\endpipeline\n' "$SETUP" "$STMT" >"$WORK/pipe4.sql"
printf '\\set id random(1, 100000)\n\\startpipeline\n%s\n%s\n\\endpipeline\n' "$SETUP" "$STMT" >"$WORK/pipe2.sql"
pg_ticks() {
  local t=0 p v
  for p in $(pgrep -x postgres); do
    v=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

say "# Postgres' cost of one REST single-row read, by shape; $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "# pgbench -M prepared -c $CLIENTS -j 2 -T $DURATION, $ROUNDS interleaved rounds; server: $(psql "$URL" -X -At -c 'SHOW server_version')"
for ((r = 1; r <= ROUNDS; r++)); do
  for shape in ref stmt full pipe4 pipe2; do
    g0=$(pg_ticks)
    pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f "$WORK/$shape.sql" "$DBURL" >"$WORK/out" 2>&1 ||
      { cat "$WORK/out" >&2; exit 1; }
    g1=$(pg_ticks)
    tps=$(awk '/^tps = / { print $3; exit }' "$WORK/out")
    n=$(awk '/number of transactions actually processed:/ { split($NF, a, "/"); print a[1] }' "$WORK/out")
    say "round=$r shape=$shape tps=$tps transactions=$n postgres_cpu_us_per_tx=$(awk -v a="$g0" -v b="$g1" -v t="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / t * 1e6 / n }')"
  done
done
say ""
awk '
  /^round=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["shape"]; c[k]++; tps[k, c[k]] = f["tps"]; cpu[k, c[k]] = f["postgres_cpu_us_per_tx"] }
  function med(s, arr,   i, j, t, n, a) {
    n = c[s]; for (i = 1; i <= n; i++) a[i] = arr[s, i] + 0
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    printf "# medians: shape tps postgres_cpu_us_per_tx (ratio of tps to ref)\n"
    r = med("ref", tps)
    printf "ref   %8.0f %6.1f\n", r, med("ref", cpu)
    n = split("stmt full pipe4 pipe2", sh, " ")
    for (i = 1; i <= n; i++) printf "%-5s %8.0f %6.1f (%.2f)\n", sh[i], med(sh[i], tps), med(sh[i], cpu), med(sh[i], tps) / r
  }' "$OUT" | tee -a "$OUT"
