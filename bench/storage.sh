#!/usr/bin/env bash
# Storage benchmark (issue: Storage API figures). Fluxbase's /storage/v1 (local backend) on a
# throwaway managed cluster (fsync on), against references measured in the same run, in
# interleaved rounds:
#
#   F1  4 KiB public object, GET /storage/v1/object/public/bench/small.bin, wrk -c50:
#       >= 0.8x Fluxbase's own REST single-row GET (/rest/v1/items?id=eq.N, bench/wrk/single.lua
#       as bench/rest.sh runs it); nginx serving the same file from the same disk beside it.
#   F2  100 MiB public object, wrk -t1 -c1 (one stream) for BIG_DURATION s: >= 0.7x the MB/s of
#       nginx serving the same file.
#   F3  100 MiB upload, POST /storage/v1/object/bench/upload/rN.bin, raw body streamed by curl
#       from a file on the same filesystem, service_role key: >= 0.5x the rate of
#       `dd if=/dev/zero bs=1M count=100 conv=fdatasync` on that filesystem; Fluxbase's VmRSS
#       (sampled every 50 ms during the upload) < 100 MB. Like dd's, the upload is on disk when
#       it is answered (the local backend fdatasyncs before committing the row).
#
#   bench/storage.sh
#
# Environment:
#   ROUNDS=5            interleaved rounds per figure (>= 3)
#   DURATION=10         seconds per F1 wrk run
#   BIG_DURATION=8      seconds per F2 wrk run
#   WARMUP=2            seconds of unrecorded wrk per F1/F2 target before the rounds
#   CONNECTIONS=50 THREADS=2   F1 wrk settings
#   BENCH_PORT=18600    Fluxbase's port; nginx uses BENCH_PORT+10
#   CARGO_LOCK=         a lock file to hold (flock) while building, on machines shared by builds
#   LOCAL_ETAG=         storage.local_etag_algorithm for the run (md5 or mtime); unset = the
#                       default configuration (mtime), which is what the figures are about
#   WAIT_OTHERS=0       after the build, wait up to this many seconds (polling every 30 s) for
#                       other benchmarks (bench/{realtime,webhooks,observability,rest,auth}.sh,
#                       scripts/fuzz-api.sh, anything under valgrind) to finish before measuring
#
# nginx (apt) runs in the foreground with its own config in the temp dir: worker_processes 2,
# sendfile on, access_log off, root = copies of the two objects on the same filesystem as the
# storage root. Fluxbase: managed mode, rate limits off, jobs off, log level warn,
# storage.file_size_limit_bytes raised to 1 GiB (the 50 MiB default refuses F3's body).
#
# Output: RESULT lines and the summary in bench/results/<date>/storage.txt, raw wrk/curl/dd
# output and RSS samples in bench/results/<date>/storage/, server logs in
# bench/results/<date>/tmp/storage-logs/ (git-ignored).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
BIG_DURATION=${BIG_DURATION:-8}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
PORT=${BENCH_PORT:-18600}
NGX_PORT=$((PORT + 10))
BIG_MIB=100

[ "$ROUNDS" -ge 3 ] || { echo "error: ROUNDS must be at least 3" >&2; exit 1; }

# --- build and tools ------------------------------------------------------------------------
${CARGO_LOCK:+flock "$CARGO_LOCK"} nice -n 10 cargo build --release --locked --bin fluxbase
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/fluxbase"
BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=$(git status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null |
  awk '{ printf "%s%s", sep, $2; sep = " " }')
[ -z "$DIRTY" ] || BUILT_FROM+=" + uncommitted changes in: $DIRTY"

OTHERS() { pgrep -f 'bench/(realtime|webhooks|observability|rest|auth).sh|fuzz-api|valgrind' | tr '\n' ' ' || :; }
WAITED=0
while [ -n "$(OTHERS)" ] && [ "$WAITED" -lt "${WAIT_OTHERS:-0}" ]; do
  echo "other benchmarks running ($(OTHERS)); waiting ($WAITED s so far) ..." >&2
  sleep 30
  WAITED=$((WAITED + 30))
done

DATE=$(date +%F)
OUT_DIR="$ROOT/bench/results/$DATE"
RAW_DIR="$OUT_DIR/storage"
LOG_DIR="$OUT_DIR/tmp/storage-logs" # git-ignored
OUT="$OUT_DIR/storage.txt"
mkdir -p "$RAW_DIR" "$LOG_DIR"
rm -f "$RAW_DIR"/*.txt
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }

apt_install() { # PACKAGE COMMAND
  command -v "$2" >/dev/null 2>&1 && return 0
  echo "$2 not found; installing $1 with apt-get" >&2
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$1"; } >>"$LOG_DIR/apt.log" 2>&1 || {
    echo "error: could not install $1 with apt-get (see $LOG_DIR/apt.log); install it and rerun" >&2
    exit 1
  }
  command -v "$2" >/dev/null 2>&1 || { echo "error: $2 still not found after apt-get" >&2; exit 1; }
}
apt_install wrk wrk
apt_install nginx-light nginx
for t in psql curl awk dd md5sum; do
  command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 1; }
done

# --- processes --------------------------------------------------------------------------------
# Short path (unix socket limits) that the `postgres` OS user can traverse when run as root.
WORK=$(mktemp -d /tmp/fbstor.XXXXXX)
chmod 755 "$WORK"
DATA="$WORK/data"
WWW="$WORK/www"
NGX="$WORK/nginx"
mkdir -p "$WWW" "$NGX/tmp"

# Room for the body file, nginx's copy, Fluxbase's copy, ROUNDS uploads and dd's file.
need_mb=$(((ROUNDS + 4) * BIG_MIB + 512))
avail_mb=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
[ "$avail_mb" -ge "$need_mb" ] || {
  echo "error: $avail_mb MB free under $WORK, $need_mb MB needed" >&2
  rm -rf "$WORK"
  exit 1
}

FX_PID=''
NGX_PID=''
SAMPLER_PID=''
stop_pid() { # PID: SIGTERM, wait up to 60 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || :
}
cleanup() {
  local pgpid f i
  stop_pid "$SAMPLER_PID"
  stop_pid "$NGX_PID"
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
port_free "$NGX_PORT" || { echo "error: port $NGX_PORT is in use (set BENCH_PORT)" >&2; exit 1; }

# Configuration from the environment alone: no ./fluxbase.yaml (the server runs in $WORK), no
# inherited database URL or config file. No background work during the measurement.
unset FLUXBASE_CONFIG FLUXBASE_DATABASE__URL FLUXBASE_SERVER__DATA_DIR FLUXBASE_SERVER__PORT \
  FLUXBASE_DATABASE__MANAGED__FSYNC DATABASE_URL FLUXBASE_STORAGE__BACKEND \
  FLUXBASE_STORAGE__LOCAL_PATH FLUXBASE_STORAGE__ENABLED
export FLUXBASE_RATE_LIMITS__ENABLED=false FLUXBASE_LOG__LEVEL=warn FLUXBASE_JOBS__ENABLED=false \
  FLUXBASE_STORAGE__FILE_SIZE_LIMIT_BYTES=$((1024 * 1024 * 1024))
unset FLUXBASE_STORAGE__LOCAL_ETAG_ALGORITHM
ETAG_ALGORITHM=mtime
if [ -n "${LOCAL_ETAG:-}" ]; then
  export FLUXBASE_STORAGE__LOCAL_ETAG_ALGORITHM=$LOCAL_ETAG
  ETAG_ALGORITHM=$LOCAL_ETAG
fi

(cd "$WORK" && exec "$BIN" serve --data-dir "$DATA" --port "$PORT") >"$LOG_DIR/fluxbase.log" 2>&1 </dev/null &
FX_PID=$!
wait_http "http://127.0.0.1:$PORT/ready" "$FX_PID" "$LOG_DIR/fluxbase.log" 180

PGURL="postgresql://postgres@$(pct "$DATA/pg"):5432/postgres"
psql_q() { psql "$PGURL" -X -q -v ON_ERROR_STOP=1 "$@"; }

# --- dataset: bench/rest.sh's items table for the REST single-row reference -------------------
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
VACUUM ANALYZE items;
SQL
[ "$(psql_q -At -c "SELECT has_table_privilege('anon', 'public.items', 'SELECT')")" = t ] ||
  psql_q -c "GRANT SELECT ON items TO anon" >>"$LOG_DIR/dataset.log" 2>&1
psql_q -c "NOTIFY pgrst, 'reload schema'" >/dev/null
sleep 2

KEYS=$(cd "$WORK" && "$BIN" keys show --data-dir "$DATA" 2>>"$LOG_DIR/keys.log")
ANON=$(awk '$1 == "anon:" { print $2 }' <<<"$KEYS")
SERVICE=$(awk '$1 == "service_role:" { print $2 }' <<<"$KEYS")
[ -n "$ANON" ] && [ -n "$SERVICE" ] ||
  { echo "error: no anon/service_role key from \`fluxbase keys show\`; see $LOG_DIR/keys.log" >&2; exit 1; }

FX="http://127.0.0.1:$PORT"
NG="http://127.0.0.1:$NGX_PORT"
SVC=(-H "apikey: $SERVICE" -H "Authorization: Bearer $SERVICE")

# --- objects: a public bucket, the two objects uploaded through the API ----------------------
echo "creating the bucket and the objects ..." >&2
BAD=0
fail() { echo "FAIL $*" >&2; BAD=1; }
st=$(curl -s -o "$WORK/resp" -w '%{http_code}' "${SVC[@]}" -H 'Content-Type: application/json' \
  --data '{"id":"bench","name":"bench","public":true}' "$FX/storage/v1/bucket")
[ "$st" = 200 ] || { echo "error: bucket creation: HTTP $st $(cat "$WORK/resp")" >&2; exit 1; }

head -c 4096 /dev/urandom >"$WWW/small.bin"
# The F3 body and the F2 object: random bytes, written once, on the same filesystem.
dd if=/dev/urandom of="$WORK/body.bin" bs=1M count="$BIG_MIB" status=none
cp "$WORK/body.bin" "$WWW/big.bin"
chmod 644 "$WWW"/*.bin

# upload NAME FILE OUTFILE : POST the file as a raw streamed body (-T, no Expect), prints
# "http_code bytes_uploaded seconds".
upload() {
  curl -s -o "$3" -w '%{http_code} %{size_upload} %{time_total}\n' -X POST -T "$2" \
    -H 'Expect:' -H 'Content-Type: application/octet-stream' "${SVC[@]}" \
    "$FX/storage/v1/object/bench/$1"
}
for f in small big; do
  read -r st _ _ < <(upload "$f.bin" "$WWW/$f.bin" "$WORK/resp")
  [ "$st" = 200 ] || { echo "error: upload of $f.bin: HTTP $st $(cat "$WORK/resp")" >&2; exit 1; }
done

# --- nginx ------------------------------------------------------------------------------------
cat >"$NGX/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  server {
    listen 127.0.0.1:$NGX_PORT;
    root $WWW;
  }
}
EOF
nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$LOG_DIR/nginx.log" 2>&1 </dev/null &
NGX_PID=$!
wait_http "$NG/small.bin" "$NGX_PID" "$LOG_DIR/nginx.log" 30

# --- correctness: the same bytes from Fluxbase, nginx and the source --------------------------
for f in small big; do
  want=$(md5sum <"$WWW/$f.bin" | cut -d' ' -f1)
  fx=$(curl -sf "$FX/storage/v1/object/public/bench/$f.bin" | md5sum | cut -d' ' -f1)
  ng=$(curl -sf "$NG/$f.bin" | md5sum | cut -d' ' -f1)
  etag=$(curl -sfI "$FX/storage/v1/object/public/bench/$f.bin" | tr -d '\r' |
    awk -F': ' 'tolower($1) == "etag" { gsub(/"/, "", $2); print $2 }')
  # The ETag as storage.local_etag_algorithm makes it: md5 = the bytes' MD5; mtime (the
  # default) = "<lastModified ms>-<size>" in hex.
  size_hex=$(printf '%x' "$(stat -c %s "$WWW/$f.bin")")
  case $ETAG_ALGORITHM in
    md5) etag_ok=$([ "$etag" = "$want" ] && echo y || echo n) ;;
    *) etag_ok=$([[ $etag =~ ^[0-9a-f]+-$size_hex$ ]] && echo y || echo n) ;;
  esac
  if [ "$fx" != "$want" ] || [ "$ng" != "$want" ] || [ "$etag_ok" != y ]; then
    fail "$f.bin: md5 source $want, fluxbase $fx, nginx $ng, fluxbase ETag $etag ($ETAG_ALGORITHM)"
  else
    echo "ok   $f.bin (md5 $want from Fluxbase, nginx; ETag $etag is $ETAG_ALGORITHM's)" >&2
  fi
done
st=$(curl -s -o "$WORK/resp" -w '%{http_code}' -H "apikey: $ANON" -H "Authorization: Bearer $ANON" \
  "$FX/rest/v1/items?id=eq.4242")
if [ "$st" != 200 ] || ! jq -e 'length == 1 and .[0].id == 4242' "$WORK/resp" >/dev/null; then
  fail "REST single: HTTP $st $(head -c 300 "$WORK/resp")"
fi
STORE_FILES=$(find "$DATA/storage" -type f | wc -l)
STORE_FS=$(df -P "$DATA/storage" | awk 'NR == 2 { print $1 }')
WWW_FS=$(df -P "$WWW" | awk 'NR == 2 { print $1 }')
[ "$STORE_FS" = "$WWW_FS" ] || fail "storage root ($STORE_FS) and nginx root ($WWW_FS) on different filesystems"
[ "$BAD" = 0 ] || { echo "error: not served correctly; nothing measured" >&2; exit 1; }

# --- measurement helpers ----------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# sampler PID FILE : VmRSS (kB) of PID every 50 ms into FILE until killed.
sampler() {
  local k v _
  while :; do
    while read -r k v _; do if [ "$k" = VmRSS: ]; then echo "$v"; break; fi; done <"/proc/$1/status"
    sleep 0.05
  done >"$2"
}
start_sampler() { sampler "$FX_PID" "$1" & SAMPLER_PID=$!; }
stop_sampler() { kill "$SAMPLER_PID" 2>/dev/null || :; wait "$SAMPLER_PID" 2>/dev/null || :; SAMPLER_PID=''; }
peak() { sort -n "$1" | tail -n 1; }

# wrk_run NAME TARGET ROUND DUR FILE WRK_ARGS... : wrk against TARGET, server CPU appended.
wrk_run() {
  local name=$1 target=$2 round=$3 dur=$4 file=$5 pid c0 c1 load
  shift 5
  if [ "$target" = nginx ]; then pid=$NGX_PID; else pid=$FX_PID; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_ticks "$pid")
  wrk -d"${dur}s" --latency "$@" >"$file" 2>&1 || { echo "error: wrk failed for $name $target; see $file" >&2; exit 1; }
  c1=$(cpu_ticks "$pid")
  {
    echo "# figure=$name target=$target round=$round duration_s=$dur loadavg_before=$load others=[$(OTHERS)]"
    echo "# server_cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
    if [ "$target" = nginx ]; then echo "# (nginx: master process only; its workers' CPU is not counted)"; fi
  } >>"$file"
}

# parse FILE : "rps p99_ms non2xx socket_errors requests MB_per_s server_cpu_s" (MB = 10^6 B)
parse() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000
      if (u == "m") return n * 60000; return n
    }
    function bytes(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "KB") return n * 1024; if (u == "MB") return n * 1048576
      if (u == "GB") return n * 1073741824; if (u == "TB") return n * 1099511627776; return n
    }
    /^Requests\/sec:/ { rps = $2 }
    /^Transfer\/sec:/ { tps = bytes($2) / 1e6 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    / requests in / { reqs = $1 }
    /^# server_cpu_s=/ { split($2, kv, "="); cpu = kv[2] }
    END { printf "%s %.3f %d %d %d %.1f %s\n", rps, p99, non2xx, sockerr, reqs, tps, cpu }
  ' "$1"
}

SMALL_URL="$FX/storage/v1/object/public/bench/small.bin"
BIG_URL="$FX/storage/v1/object/public/bench/big.bin"
# f1 TARGET ROUND DUR FILE
f1() {
  case $1 in
    rest) BENCH_TARGET=fluxbase APIKEY=$ANON WRK_DIR="$ROOT/bench/wrk" wrk_run F1 rest "$2" "$3" "$4" \
      -t"$THREADS" -c"$CONNECTIONS" -s "$ROOT/bench/wrk/single.lua" "$FX" ;;
    storage) wrk_run F1 storage "$2" "$3" "$4" -t"$THREADS" -c"$CONNECTIONS" "$SMALL_URL" ;;
    nginx) wrk_run F1 nginx "$2" "$3" "$4" -t"$THREADS" -c"$CONNECTIONS" "$NG/small.bin" ;;
  esac
}
# f2 TARGET ROUND DUR FILE
f2() {
  case $1 in
    storage) wrk_run F2 storage "$2" "$3" "$4" -t1 -c1 --timeout 60s "$BIG_URL" ;;
    nginx) wrk_run F2 nginx "$2" "$3" "$4" -t1 -c1 --timeout 60s "$NG/big.bin" ;;
  esac
}

say "# Fluxbase Storage benchmark, $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "built from: $BUILT_FROM"
say "fluxbase=$("$BIN" --version) $(nginx -v 2>&1 | sed 's/^nginx version: //') $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2) cpus=$(nproc) rounds=$ROUNDS"
say "database: throwaway managed cluster (fsync on); fluxbase: managed mode, rate limits off, jobs off, log level warn"
say "storage: local backend, root $DATA/storage ($STORE_FS, $STORE_FILES files after setup); nginx root on the same filesystem"
say "storage.local_etag_algorithm: $ETAG_ALGORITHM ($([ -n "${LOCAL_ETAG:-}" ] && echo "set by LOCAL_ETAG" || echo "the default")); uploads are fdatasync'ed before their row commits"
say "nginx: worker_processes 2, sendfile on, tcp_nopush on, access_log off (foreground, own config)"
say "F1: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, warm-up ${WARMUP}s; rest = bench/wrk/single.lua (anon key), storage/nginx = plain GET of the same 4096 B file"
say "F2: wrk -t1 -c1 -d${BIG_DURATION}s --timeout 60s, warm-up ${WARMUP}s; MB/s = wrk Transfer/sec in 10^6 B/s"
say "F3: dd if=/dev/zero of=<work dir> bs=1M count=$BIG_MIB conv=fdatasync vs curl -X POST -T <$BIG_MIB MiB file> (service_role, raw body); syncfs between steps, untimed"
say "other benchmarks running at start: [$(OTHERS)] (waited $WAITED s for others to finish)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; each wrk file records its own as loadavg_before)"
say ""

# --- F1, F2 -----------------------------------------------------------------------------------
echo "warming up ..." >&2
for t in rest storage nginx; do f1 "$t" 0 "$WARMUP" "$LOG_DIR/warmup-f1-$t.txt"; done
for t in storage nginx; do f2 "$t" 0 "$WARMUP" "$LOG_DIR/warmup-f2-$t.txt"; done
RSS_IDLE=$(rss_kb "$FX_PID")
say "fluxbase VmRSS after warm-up: $RSS_IDLE kB"

for ((r = 1; r <= ROUNDS; r++)); do
  for t in rest storage nginx; do
    f="$RAW_DIR/f1-$t-r$r.txt"
    f1 "$t" "$r" "$DURATION" "$f"
    read -r rps p99 non2xx sockerr reqs mbs cpu < <(parse "$f")
    say "$(printf 'RESULT fig=F1 round=%d target=%-7s rps=%s p99_ms=%s requests=%s non2xx=%s socket_errors=%s server_cpu_s=%s' \
      "$r" "$t" "$rps" "$p99" "$reqs" "$non2xx" "$sockerr" "$cpu")"
  done
done
for ((r = 1; r <= ROUNDS; r++)); do
  for t in storage nginx; do
    f="$RAW_DIR/f2-$t-r$r.txt"
    if [ "$t" = storage ]; then start_sampler "$RAW_DIR/f2-rss-r$r.txt"; fi
    f2 "$t" "$r" "$BIG_DURATION" "$f"
    pk=''
    if [ "$t" = storage ]; then stop_sampler; pk=" rss_peak_kb=$(peak "$RAW_DIR/f2-rss-r$r.txt")"; fi
    read -r rps p99 non2xx sockerr reqs mbs cpu < <(parse "$f")
    say "$(printf 'RESULT fig=F2 round=%d target=%-7s mbps=%s requests=%s non2xx=%s socket_errors=%s server_cpu_s=%s%s' \
      "$r" "$t" "$mbs" "$reqs" "$non2xx" "$sockerr" "$cpu" "$pk")"
  done
done

# --- F3 ---------------------------------------------------------------------------------------
cat "$WORK/body.bin" >/dev/null # the body is read from the page cache, as dd reads /dev/zero
BODY_BYTES=$(stat -c %s "$WORK/body.bin")
for ((r = 1; r <= ROUNDS; r++)); do
  sync -f "$WORK"
  load=$(cut -d' ' -f1 /proc/loadavg)
  f="$RAW_DIR/f3-dd-r$r.txt"
  dd if=/dev/zero of="$WORK/dd.bin" bs=1M count="$BIG_MIB" conv=fdatasync 2>"$f"
  rm -f "$WORK/dd.bin"
  # "104857600 bytes (105 MB, 100 MiB) copied, 0.5 s, 210 MB/s": rate from bytes and seconds.
  dd_mbs=$(awk '/ copied, / { for (i = 1; i <= NF; i++) if ($i == "copied,") s = $(i + 1); printf "%.1f", $1 / s / 1e6 }' "$f")
  echo "# others=[$(OTHERS)]" >>"$f"
  say "$(printf 'RESULT fig=F3 round=%d target=dd      mbps=%s loadavg_before=%s' "$r" "$dd_mbs" "$load")"

  sync -f "$WORK"
  load=$(cut -d' ' -f1 /proc/loadavg)
  f="$RAW_DIR/f3-upload-r$r.txt"
  rss0=$(rss_kb "$FX_PID")
  start_sampler "$RAW_DIR/f3-rss-r$r.txt"
  read -r st up secs < <(upload "upload/r$r.bin" "$WORK/body.bin" "$WORK/resp")
  stop_sampler
  t0=$(date +%s.%N)
  sync -f "$WORK"
  t1=$(date +%s.%N)
  {
    echo "http_code=$st size_upload=$up time_total_s=$secs"
    echo "response: $(cat "$WORK/resp")"
    echo "syncfs_after_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    echo "# others=[$(OTHERS)]"
  } >"$f"
  [ "$st" = 200 ] && [ "$up" = "$BODY_BYTES" ] || { echo "error: upload round $r: HTTP $st, $up bytes; see $f" >&2; exit 1; }
  up_mbs=$(awk -v b="$up" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
  durable_mbs=$(awk -v b="$up" -v s="$secs" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / (s + z - a) / 1e6 }')
  say "$(printf 'RESULT fig=F3 round=%d target=upload  mbps=%s with_syncfs_mbps=%s rss_before_kb=%s rss_peak_kb=%s samples=%s loadavg_before=%s' \
    "$r" "$up_mbs" "$durable_mbs" "$rss0" "$(peak "$RAW_DIR/f3-rss-r$r.txt")" "$(wc -l <"$RAW_DIR/f3-rss-r$r.txt")" "$load")"
done
# The uploaded objects are checked once: the last one must be the body's bytes.
got=$(curl -sf "$FX/storage/v1/object/public/bench/upload/r$ROUNDS.bin" | md5sum | cut -d' ' -f1)
want=$(md5sum <"$WORK/body.bin" | cut -d' ' -f1)
[ "$got" = "$want" ] || say "WARNING: upload/r$ROUNDS.bin reads back with md5 $got, expected $want"
rm -f "$WORK/body.bin"

RSS_END=$(rss_kb "$FX_PID")
say "fluxbase VmRSS at the end: $RSS_END kB"
say "other benchmarks running at the end: [$(OTHERS)]"
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
errs=$(grep -ciE 'error|panic' "$LOG_DIR/fluxbase.log" || :)
say "fluxbase log: $errs lines with error/panic ($LOG_DIR/fluxbase.log)"
say ""

# --- summary ----------------------------------------------------------------------------------
awk '
  function med(arr, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    lo = arr[1]; hi = arr[n]
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
  }
  function stat(fig, tg, key,   m, i, a) {
    m = n[fig, tg]; delete a
    for (i = 1; i <= m; i++) a[i] = v[fig, tg, key, i]
    M = med(a, m); L = lo; H = hi
    return sprintf("%.1f [%.1f..%.1f]", M, L, H)
  }
  /^RESULT / {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["fig"] SUBSEP f["target"]; c = ++n[k]
    for (x in f) v[f["fig"], f["target"], x, c] = f[x]
    if (f["non2xx"] > 0 || f["socket_errors"] > 0) bad[f["fig"]] = 1
  }
  END {
    rounds = n["F1", "rest"]
    printf "# summary: median [min..max] over %d interleaved rounds; ratio = median / median\n", rounds
    s1 = stat("F1", "storage", "rps"); m1 = M
    r1 = stat("F1", "rest", "rps"); mr = M
    g1 = stat("F1", "nginx", "rps"); mg = M
    p1 = stat("F1", "storage", "p99_ms")
    ratio = m1 / mr
    printf "F1 4 KiB public GET, req/s: storage %s, REST single %s, nginx %s; storage p99 ms %s\n", s1, r1, g1, p1
    printf "F1 storage/REST = %.2f (target >= 0.80: %s); storage/nginx = %.2f%s\n", ratio,
      ratio >= 0.8 ? "met" : "MISSED", m1 / mg, bad["F1"] ? "; INVALID: non-2xx or socket errors" : ""
    s2 = stat("F2", "storage", "mbps"); m2 = M
    g2 = stat("F2", "nginx", "mbps"); mg2 = M
    rp = stat("F2", "storage", "rss_peak_kb"); rpm = M
    ratio = m2 / mg2
    printf "F2 100 MiB download, one stream, MB/s: storage %s, nginx %s; fluxbase peak VmRSS kB %s\n", s2, g2, rp
    printf "F2 storage/nginx = %.2f (target >= 0.70: %s)%s\n", ratio, ratio >= 0.7 ? "met" : "MISSED",
      bad["F2"] ? "; INVALID: non-2xx or socket errors" : ""
    s3 = stat("F3", "upload", "mbps"); m3 = M
    d3 = stat("F3", "dd", "mbps"); md = M
    w3 = stat("F3", "upload", "with_syncfs_mbps"); mw = M
    rs = stat("F3", "upload", "rss_peak_kb"); rsm = M; rsh = H
    rb = stat("F3", "upload", "rss_before_kb")
    ratio = m3 / md
    printf "F3 100 MiB upload, MB/s: upload %s, dd conv=fdatasync %s; upload + syncfs %s\n", s3, d3, w3
    printf "F3 upload/dd = %.2f (target >= 0.50: %s); (upload + syncfs)/dd = %.2f\n", ratio,
      ratio >= 0.5 ? "met" : "MISSED", mw / md
    printf "F3 fluxbase VmRSS kB before upload %s, peak during upload %s; max %.1f MB (target < 100 MB: %s)\n",
      rb, rs, rsh / 1024, rsh * 1024 < 100e6 ? "met" : "MISSED"
  }
' "$OUT" | tee -a "$OUT"
say ""
say "raw output: $RAW_DIR/"
say "summary: $OUT"
