#!/usr/bin/env bash
# Pipeline benchmarks (issue 4), each next to its baseline in the same run:
#  1. the builtin engine on an Odoo-shaped database of at least 1 GiB, next to
#     plain pg_restore + pg_dump of the same dump;
#  2. inspecting a 2 GiB custom dump without TOC offsets, next to reading the
#     file once;
#  3. passthrough: process -> done for a 2 GiB upload.
# Usage: bench/pipeline.sh   (as root; uses the PostgreSQL at $BENCH_PG, default 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(pwd)/bench/out
mkdir -p "$OUT"
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
WORK=$(mktemp -d "$OUT/pipeline.XXXXXX")
chmod 755 "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS bench_baseline WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fresh_cache() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

go build -o "$WORK/pipeline" ./bench/pipeline
go build -o "$WORK/upgrade-server" ./cmd/upgrade-server

# An Odoo 12-shaped database with about 2 GiB of partners and attachments.
BIG="$OUT/odoo12-2g"
bench/odoo-dump.sh
ls -l "$BIG".*
echo

echo "== 1. builtin engine (12.0 -> 16.0) vs pg_restore + pg_dump, $(stat -c %s "$BIG.custom.dump") byte custom dump"
fresh_cache
psql -qX -d postgres -c "CREATE DATABASE bench_baseline"
t_restore=$(secs pg_restore --no-owner --no-acl --exit-on-error -d bench_baseline "$BIG.custom.dump")
t_dump=$(secs pg_dump --no-owner --no-acl -Fc -d bench_baseline -f "$WORK/baseline.dump")
psql -qX -d postgres -c "DROP DATABASE bench_baseline WITH (FORCE)"
printf 'baseline: pg_restore %.1fs + pg_dump %.1fs = %.1fs\n' "$t_restore" "$t_dump" "$(echo "$t_restore + $t_dump" | bc -l)"
fresh_cache
"$WORK/pipeline" engine -db "$PG/postgres" -dump "$BIG.custom.dump" -work "$WORK/engine" | tee "$WORK/engine.out"
t_engine=$(sed -n 's/^engine: \([0-9.]*\)s.*/\1/p' "$WORK/engine.out")
printf 'builtin engine / baseline: %.2fx (target <= 1.25)\n\n' "$(echo "$t_engine / ($t_restore + $t_dump)" | bc -l)"

echo "== 2. inspection of a custom dump without offsets (pg_dump -Fc -Z0 | cat), page cache dropped before each"
fresh_cache
"$WORK/pipeline" inspect -dump "$BIG.custom-piped.dump"
echo

echo "== 3. passthrough: process -> done for a 2 GiB upload"
"$WORK/upgrade-server" --http-addr 127.0.0.1:0 --sftp-addr 127.0.0.1:0 --data-dir "$WORK/server" --engine passthrough \
  --max-upload-bytes 0 --log-level warn >"$WORK/server.out" 2>"$WORK/server.log" &
pids+=($!)
for _ in $(seq 1 600); do grep -q "http listening" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/.*http listening on //p' "$WORK/server.out")
for dumpfile in "$BIG.custom.dump" "$BIG.custom-piped.dump"; do
  create=$(curl -sS "$BASE/database/v1/create?contract=bench&aim=test&target=16.0&email=bench@example.com&filename=bench.dump")
  id=$(echo "$create" | jq -r .request.id); key=$(echo "$create" | jq -r .request.key)
  params="request=$id&key=$(jq -rn --arg k "$key" '$k|@uri')"
  curl -sS -T "$dumpfile" "$BASE/database/v1/upload?$params" | jq -e '.failures == []' >/dev/null
  s=$(date +%s.%N)
  curl -sS "$BASE/database/v1/process?$params" >/dev/null
  while :; do
    state=$(curl -sS "$BASE/database/v1/status?$params" | jq -r .request.state)
    [ "$state" = pending ] || [ "$state" = processing ] || break
    sleep 0.01
  done
  e=$(date +%s.%N)
  printf 'passthrough %s (%d bytes): process -> %s in %.2fs (target <= 1 s)\n' "$(basename "$dumpfile")" "$(stat -c %s "$dumpfile")" "$state" "$(echo "$e - $s" | bc -l)"
done
