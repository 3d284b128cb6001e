#!/usr/bin/env bash
# Object storage benchmarks (issue 10), against a real MinIO on loopback:
#  1. a 2 GiB upload with `curl -T` to /database/v1/upload, on a server storing
#     in S3 and on one storing on local disk, next to a plain upload of the same
#     file to the same MinIO with the same client library and options
#     (bench/s3put), alone and with the server's sha256 on the way; server RSS
#     growth; CPU seconds of each process;
#  2. the builtin engine (restore -> upgrade -> dump) of the 2.3 GB Odoo-shaped
#     dump of bench/pipeline.sh, on S3 and on local disk.
# Usage: bench/s3.sh [size, default 2G] [rounds, default 3]   (as root: it drops the page cache)
# Uses the PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432,
# trust auth): a database per server, and the engine's scratch databases.
# MinIO is built once from the Go module proxy into bench/out/bin (pinned below).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2G}
ROUNDS=${2:-3}
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c # what `go list -m github.com/minio/minio@latest` resolved on 2026-11-28
OUT=$(pwd)/bench/out
mkdir -p "$OUT/bin"
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
WORK=$(mktemp -d "$OUT/s3.XXXXXX")
chmod 755 "$WORK"
DBS=(bench_s3_file_$$ bench_s3_obj_$$)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for db in "${DBS[@]}"; do psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fresh_cache() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

MINIO="$OUT/bin/minio"
if [ ! -x "$MINIO" ] || [ "$(go version -m "$MINIO" | awk '$1 == "mod" {print $3}')" != "$MINIO_VERSION" ]; then
  echo "building MinIO $MINIO_VERSION (a few minutes, once)"
  GOBIN="$OUT/bin" go install "github.com/minio/minio@$MINIO_VERSION"
fi
go build -o "$WORK/upgrade-server" ./cmd/upgrade-server
go build -o "$WORK/s3put" ./bench/s3put
go build -o "$WORK/pipeline" ./bench/pipeline
bench/odoo-dump.sh
BIG="$OUT/odoo12-2g.custom-piped.dump"

DUMP="$OUT/upload-$SIZE.bin"
if [ ! -f "$DUMP" ]; then
  echo "making $DUMP"
  head -c "$SIZE" /dev/urandom > "$DUMP.tmp" && mv "$DUMP.tmp" "$DUMP"
fi
BYTES=$(stat -c %s "$DUMP")

free_port() { # the first loopback port from $1 that nothing listens on
  local p=$1
  while ss -Htln "sport = :$p" | grep -q .; do p=$((p + 1)); done
  echo "$p"
}
# MinIO, single drive, its data folder next to the servers' data directories.
export AWS_ACCESS_KEY_ID=benchadmin AWS_SECRET_ACCESS_KEY=benchadmin-secret
PORT=$(free_port 19000); CPORT=$(free_port $((PORT + 1)))
MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off MINIO_UPDATE=off \
  "$MINIO" server "$WORK/minio" --address "127.0.0.1:$PORT" --console-address "127.0.0.1:$CPORT" --quiet \
  >"$WORK/minio.log" 2>&1 &
MPID=$!; pids+=($MPID)
ENDPOINT=http://127.0.0.1:$PORT
for _ in $(seq 1 300); do curl -sf "$ENDPOINT/minio/health/live" && break; sleep 0.1; done
curl -sf "$ENDPOINT/minio/health/live" || { cat "$WORK/minio.log"; exit 1; }
s3() { "$WORK/s3put" -endpoint "$ENDPOINT" -bucket bench "$@"; }
s3 mb

start_server() { # name database, extra env...; sets URL and PID
  local name=$1 db=$2; shift 2
  psql -qX -d postgres -c "CREATE DATABASE $db"
  env "$@" "$WORK/upgrade-server" --http-addr 127.0.0.1:0 --sftp-addr 127.0.0.1:0 --data-dir "$WORK/$name" \
    --database-url "$PG/$db?sslmode=disable" --max-upload-bytes 0 --log-level warn \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID=$!; pids+=($PID)
  for _ in $(seq 1 600); do grep -q "http listening" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/.*http listening on //p' "$WORK/$name.out")
  [ -n "$URL" ] || { cat "$WORK/$name.log"; exit 1; }
}
start_server file "${DBS[0]}"; FILE=$URL; FPID=$PID
start_server obj "${DBS[1]}" UPGRADE_STORAGE=s3://bench/server UPGRADE_S3_ENDPOINT="$ENDPOINT" UPGRADE_S3_PATH_STYLE=true \
  UPGRADE_S3_ACCESS_KEY="$AWS_ACCESS_KEY_ID" UPGRADE_S3_SECRET_KEY="$AWS_SECRET_ACCESS_KEY"; OBJ=$URL; OPID=$PID

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TCK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; } # user+system seconds so far
since() { printf '%.2f' "$(echo "$(cpu_s "$1") - $2" | bc -l)"; }              # pid, cpu_s before

declare -A total times
growth_max=0
row() { # label seconds client-cpu server-cpu minio-cpu memory-note
  printf '%-6s %-22s %8.2f %8.0f %7.2f %7s %7.2f   %s\n' "$i" "$1" "$2" "$(echo "$BYTES / 1048576 / $2" | bc -l)" "$3" "$4" "$5" "$6"
  total[$1]=$(echo "${total[$1]:-0} + $2" | bc -l)
  times[$1]="${times[$1]:-} $2"
}
plain_upload() { # label, s3put flags...
  local label=$1 m0 res t peak cpu; shift
  fresh_cache
  m0=$(cpu_s "$MPID")
  res=$(s3 "$@" -key plain/upload put "$DUMP" 2>"$WORK/s3put.err") || { cat "$WORK/s3put.err"; exit 1; }
  read -r t peak cpu <<<"$res"
  row "$label" "$t" "$cpu" - "$(since "$MPID" "$m0")" "s3put peak RSS $((peak / 1024)) MiB"
  s3 rm plain/
}
server_upload() { # label url pid
  local create id key t before peak growth s0 m0 ccpu
  create=$(curl -sS "$2/database/v1/create?contract=bench&aim=test&target=16.0&email=bench@example.com&filename=bench.dump")
  id=$(echo "$create" | jq -r .request.id); key=$(echo "$create" | jq -r .request.key)
  fresh_cache
  before=$(rss_kib "$3"); echo 5 > "/proc/$3/clear_refs"
  s0=$(cpu_s "$3"); m0=$(cpu_s "$MPID")
  t=$(/usr/bin/time -f '%U %S' -o "$WORK/curl.cpu" curl -sS -o "$WORK/answer.json" -w '%{time_total}' -T "$DUMP" \
    "$2/database/v1/upload?request=$id&key=$(jq -rn --arg k "$key" '$k|@uri')")
  peak=$(hwm_kib "$3")
  [ "$(jq '.failures | length' "$WORK/answer.json")" = 0 ] || { cat "$WORK/answer.json"; exit 1; }
  ccpu=$(awk '{print $1 + $2}' "$WORK/curl.cpu")
  growth=$(( (peak - before) / 1024 ))
  [ "$growth" -gt "$growth_max" ] && growth_max=$growth
  row "$1" "$t" "$ccpu" "$(since "$3" "$s0")" "$(since "$MPID" "$m0")" \
    "RSS $((before / 1024)) MiB, peak $((peak / 1024)) MiB (+$growth MiB)"
  s3 rm server/
  rm -rf "$WORK/file/requests/$id"
}

echo "upload: $BYTES bytes, $ROUNDS rounds, page cache dropped before each; go $(go env GOVERSION), $(nproc) cores; MinIO $MINIO_VERSION at $ENDPOINT"
printf '%-6s %-22s %8s %8s %7s %7s %7s   (CPU seconds: client, server, MinIO)\n' round target seconds MiB/s client server minio
rss_start=$(rss_kib "$OPID")
for i in $(seq 1 "$ROUNDS"); do
  plain_upload "plain PutObject"
  plain_upload "plain PutObject+sha256" -sha256
  server_upload "server, S3" "$OBJ" "$OPID"
  server_upload "server, file" "$FILE" "$FPID"
done
mibs() { echo "$BYTES * $ROUNDS / 1048576 / ${total[$1]}" | bc -l; }
median() { printf '%s\n' ${times[$1]} | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { echo "${total[$1]} / ${total[$2]}" | bc -l; }
mratio() { echo "$(median "$1") / $(median "$2")" | bc -l; }
echo
printf '%-22s %8s %8s   (MiB/s over %d rounds; a round slowed by the other load weighs on the mean)\n' target mean median "$ROUNDS"
for k in "plain PutObject" "plain PutObject+sha256" "server, S3" "server, file"; do
  printf '%-22s %8.0f %8.0f\n' "$k" "$(mibs "$k")" "$(echo "$BYTES / 1048576 / $(median "$k")" | bc -l)"
done
printf 'server, S3 / plain PutObject:        %.2fx mean, %.2fx median (target >= 0.90)\n' "$(ratio "plain PutObject" "server, S3")" "$(mratio "plain PutObject" "server, S3")"
printf 'server, S3 / plain PutObject+sha256: %.2fx mean, %.2fx median\n' "$(ratio "plain PutObject+sha256" "server, S3")" "$(mratio "plain PutObject+sha256" "server, S3")"
printf 'server, S3 / server, file:           %.2fx mean, %.2fx median\n' "$(ratio "server, file" "server, S3")" "$(mratio "server, file" "server, S3")"
echo "max server RSS growth during an upload: $growth_max MiB (target <= 64)"
echo "server on S3: RSS $((rss_start / 1024)) MiB before the first upload, $(( $(rss_kib "$OPID") / 1024 )) MiB after the last"
kill "$FPID" "$OPID"

echo
echo "== builtin engine (12.0 -> 16.0) on $(basename "$BIG") ($(stat -c %s "$BIG") bytes), local disk then S3"
engine() { # label, extra flags...
  local label=$1 m0; shift
  fresh_cache
  m0=$(cpu_s "$MPID")
  "$WORK/pipeline" engine -db "$PG/postgres" -dump "$BIG" -work "$WORK/engine-$label" "$@" | tee "$WORK/engine-$label.out"
  echo "MinIO CPU during the run (with the untimed copy into the store): $(since "$MPID" "$m0")s"
  sed -n 's/^engine: \([0-9.]*\)s.*/\1/p' "$WORK/engine-$label.out" > "$WORK/engine-$label.t"
  rm -rf "$WORK/engine-$label"
}
engine file
s3 rm pipeline/
engine s3 -storage s3://bench/pipeline -s3-endpoint "$ENDPOINT"
s3 rm pipeline/
t_file=$(cat "$WORK/engine-file.t"); t_s3=$(cat "$WORK/engine-s3.t")
printf 'engine: local disk %.1fs, S3 %.1fs: S3 / local disk = %.2fx\n' "$t_file" "$t_s3" "$(echo "$t_s3 / $t_file" | bc -l)"
