#!/usr/bin/env bash
# HTTP API benchmarks (issue 2), printed side by side with their baselines:
#  1. a 2 GiB upload with `curl -T` to /database/v1/upload and to a bare Go
#     handler that only copies the body to a file; server RSS growth;
#  2. `status` from 64 keep-alive connections, next to /healthz (no database).
# Usage: bench/http.sh [size, default 2G] [rounds, default 3]   (as root: it drops the page cache)
# Uses UPGRADE_DATABASE_URL when set, else the embedded PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2G}
ROUNDS=${2:-3}
OUT=$(pwd)/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/run.XXXXXX")
chmod 755 "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

go build -o "$WORK/upgrade-server" ./cmd/upgrade-server
go build -o "$WORK/bare" ./bench/bare
go build -o "$WORK/statusload" ./bench/statusload

DUMP="$OUT/upload-$SIZE.bin"
if [ ! -f "$DUMP" ]; then
  echo "making $DUMP"
  head -c "$SIZE" /dev/urandom > "$DUMP.tmp" && mv "$DUMP.tmp" "$DUMP"
fi
BYTES=$(stat -c %s "$DUMP")

# Two servers on one data directory (they share its embedded PostgreSQL):
# the default (fsync each upload) and --upload-fsync=false. Two baselines:
# the bare handler, without and with an fsync.
start_server() { # name, extra flags...; sets URL and PID
  local name=$1; shift
  "$WORK/upgrade-server" --http-addr 127.0.0.1:0 --sftp-addr 127.0.0.1:0 --data-dir "$WORK/data" --max-upload-bytes 0 --log-level warn "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID=$!; pids+=($PID)
  for _ in $(seq 1 600); do grep -q listening "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/.*http listening on //p' "$WORK/$name.out")
}
start_bare() { # name, extra flags...; sets URL
  local name=$1; shift
  "$WORK/bare" -dir "$WORK" "$@" >"$WORK/$name.out" &
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$WORK/$name.out" ] && break; sleep 0.1; done
  URL=$(head -1 "$WORK/$name.out")
}
start_server server; SERVER=$URL; SPID=$PID
start_server nosync --upload-fsync=false; NOSYNC=$URL; NPID=$PID
start_bare bare; BARE=$URL
start_bare barehash -sha256; BAREHASH=$URL
start_bare baresync -sha256 -fsync; BARESYNC=$URL

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
fresh_cache() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

declare -A total
growth_max=0
bare_upload() { # label url
  fresh_cache
  local t; t=$(curl -sS -o /dev/null -w '%{time_total}' -T "$DUMP" "$2/")
  rm -f "$WORK/bare-upload"
  printf '%-6s %-28s %8.2f %8.0f\n' "$i" "$1" "$t" "$(echo "$BYTES / 1048576 / $t" | bc -l)"
  total[$1]=$(echo "${total[$1]:-0} + $t" | bc -l)
}
server_upload() { # label url pid
  local create id key t before peak growth
  create=$(curl -sS "$2/database/v1/create?contract=bench&aim=test&target=16.0&email=bench@example.com&filename=bench.dump")
  id=$(echo "$create" | jq -r .request.id); key=$(echo "$create" | jq -r .request.key)
  fresh_cache
  before=$(rss_kib "$3"); echo 5 > "/proc/$3/clear_refs"
  t=$(curl -sS -o "$WORK/answer.json" -w '%{time_total}' -T "$DUMP" "$2/database/v1/upload?request=$id&key=$(jq -rn --arg k "$key" '$k|@uri')")
  peak=$(hwm_kib "$3")
  [ "$(jq '.failures | length' "$WORK/answer.json")" = 0 ] || { cat "$WORK/answer.json"; exit 1; }
  growth=$(( (peak - before) / 1024 ))
  [ "$growth" -gt "$growth_max" ] && growth_max=$growth
  printf '%-6s %-28s %8.2f %8.0f   RSS %d MiB, peak %d MiB (+%d MiB)\n' "$i" "$1" "$t" \
    "$(echo "$BYTES / 1048576 / $t" | bc -l)" $((before / 1024)) $((peak / 1024)) "$growth"
  total[$1]=$(echo "${total[$1]:-0} + $t" | bc -l)
  rm -rf "$WORK/data/requests/$id"
}

echo "upload: $BYTES bytes with curl -T, $ROUNDS rounds, page cache dropped before each; go $(go env GOVERSION), $(nproc) cores"
printf '%-6s %-28s %8s %8s\n' round target seconds MiB/s
for i in $(seq 1 "$ROUNDS"); do
  bare_upload "bare" "$BARE"
  bare_upload "bare+sha256" "$BAREHASH"
  server_upload "server --upload-fsync=false" "$NOSYNC" "$NPID"
  bare_upload "bare+sha256+fsync" "$BARESYNC"
  server_upload "server (default, fsync)" "$SERVER" "$SPID"
done
mibs() { echo "$BYTES * $ROUNDS / 1048576 / ${total[$1]}" | bc -l; }
ratio() { echo "${total[$1]} / ${total[$2]}" | bc -l; }
echo
printf '%-28s %8s %s\n' target "MiB/s" "(mean of $ROUNDS)"
for k in "bare" "bare+sha256" "server --upload-fsync=false" "bare+sha256+fsync" "server (default, fsync)"; do
  printf '%-28s %8.0f\n' "$k" "$(mibs "$k")"
done
printf 'server --upload-fsync=false: %.2fx bare, %.2fx bare+sha256\n' "$(ratio bare "server --upload-fsync=false")" "$(ratio bare+sha256 "server --upload-fsync=false")"
printf 'server (default, fsync):     %.2fx bare, %.2fx bare+sha256+fsync\n' "$(ratio bare "server (default, fsync)")" "$(ratio bare+sha256+fsync "server (default, fsync)")"
echo "max server RSS growth during an upload: $growth_max MiB (target <= 64); upload target >= 0.90x the bare handler"

create=$(curl -sS "$SERVER/database/v1/create?contract=bench&aim=test&target=16.0&email=bench@example.com&filename=bench.dump")
id=$(echo "$create" | jq -r .request.id); key=$(echo "$create" | jq -r .request.key)
STATUS="$SERVER/database/v1/status?request=$id&key=$(jq -rn --arg k "$key" '$k|@uri')"
echo
echo "status: 64 keep-alive connections, 10 s each, load generator on the same 2 cores"
"$WORK/statusload" -url "$SERVER/healthz" -c 64 -d 10s -label healthz
"$WORK/statusload" -url "$STATUS" -c 64 -d 10s -label status
echo "(targets for status: >= 3000 rps, p99 <= 30 ms)"
