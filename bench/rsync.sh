#!/usr/bin/env bash
# rsync benchmark (issue 9): a 2 GiB directory-format dump sent and fetched
# with the real rsync and ssh, exactly as Odoo's upgrade script runs them,
# through upgrade-server's per-transfer rsync endpoint and, in the same run,
# through OpenSSH's own sshd (a throwaway config on a spare loopback port)
# with the same rsync options. Prints throughput both ways, the time of
# transfer/start and transfer/stop (the upload recorded, the request
# pending), and the server's RSS growth.
# Usage: bench/rsync.sh [rounds, default 3]   (as root; installs openssh-server if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
OUT=$(pwd)/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/rsync.XXXXXX")
chmod 755 "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

LABEL_WIDTH=40
. bench/openssh.sh
go build -o "$WORK/upgrade-server" ./cmd/upgrade-server

# The dump: an Odoo 12-shaped database (the test fixture, 300 000 partners
# and 1 950 attachments of 1 MiB of random bytes stored in the database, as
# scanned documents and pictures are) dumped once with `pg_dump --format d`
# and its default compression, as the script's -d path dumps a database.
DUMP=$OUT/odoo12-2g.dir
if [ ! -f "$DUMP/toc.dat" ]; then
  export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
  DB=bench_rsync_$$
  echo "building the Odoo-shaped database and its directory dump (a few minutes, once)"
  psql -qX -d postgres -c "CREATE DATABASE $DB"
  pg_restore --no-owner -d "$DB" internal/dump/testdata/fixtures/odoo12.custom.dump
  psql -qX -d "$DB" -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION pgcrypto;
INSERT INTO res_partner (name, email, comment)
  SELECT 'Partner ' || i, 'p' || i || '@example.com', md5(i::text) || md5((i * 7)::text)
  FROM generate_series(1, 300000) i;
INSERT INTO ir_attachment (name, mimetype, db_datas, file_size)
  SELECT 'scan ' || i || '.jpg', 'image/jpeg',
         (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 1024) WHERE i > 0), 1048576
  FROM generate_series(1, 1950) i;
DROP EXTENSION pgcrypto;
SQL
  rm -rf "$DUMP.tmp"
  pg_dump --no-owner --format d --jobs 2 -d "$DB" -f "$DUMP.tmp"
  psql -qX -d postgres -c "DROP DATABASE $DB WITH (FORCE)"
  mv "$DUMP.tmp" "$DUMP"
fi
BYTES=$(du -sb "$DUMP" | cut -f1)
FILES=$(find "$DUMP" -type f | wc -l)

ssh-keygen -q -t rsa -N '' -f "$WORK/upgrade_ssh_key" # the script makes an RSA key
start_sshd "$WORK/upgrade_ssh_key.pub"
echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1-2 "$WORK/sshd/host_key.pub")" > "$WORK/sshd/known_hosts"

# upgrade-server on its embedded PostgreSQL: HTTP for create, HTTPS for the
# rest (the script's host switch), rsync endpoints on any free port.
"$WORK/upgrade-server" --http-addr 127.0.0.1:0 --https-addr 127.0.0.1:0 --sftp-addr off --data-dir "$WORK/data" \
  --workers 0 --log-level warn >"$WORK/server.out" 2>"$WORK/server.log" &
SPID=$!; pids+=($SPID)
for _ in $(seq 1 600); do grep -q "https listening" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/.*http listening on //p' "$WORK/server.out")
CERT=$WORK/data/tls/cert.pem

now() { date +%s.%N; }
# rpc BASE NAME PARAMS-JSON: one JSON-RPC call as the script makes it; its
# result, or exit 1 on {"result": {"error": …}}.
rpc() {
  local ans
  ans=$(curl -sS --fail --cacert "$CERT" -H 'Content-Type: application/json' \
    -d "{\"jsonrpc\":\"2.0\",\"method\":\"not_used\",\"params\":$3,\"id\":\"not_used\"}" "$1/upgrade/request/$2")
  if echo "$ans" | jq -e '.result.error' >/dev/null; then echo "$2: $ans" >&2; return 1; fi
  echo "$ans" | jq -c .result
}
same_tree() { diff -rq "$1" "$2" >/dev/null || { echo "$3 differs"; exit 1; }; }
# The script's rsync options (upload; download adds --ignore-missing-args).
UPOPTS=(--chmod=u+rwx,g+rwx,o+r --info=progress2 --delete-after -a)
ssh_e() { # port known_hosts [ssh options]
  local port=$1 kh=$2; shift 2
  echo "ssh -p $port -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$kh -i $WORK/upgrade_ssh_key $*"
}

declare -A extra

echo "rsync: $BYTES bytes in $FILES files (pg_dump --format d), $(rsync --version | head -1 | cut -d' ' -f1-4), $(ssh -V 2>&1 | cut -d, -f1); $ROUNDS rounds; $(nproc) cores"
printf '%-6s %-40s %8s %8s\n' round target seconds MiB/s
for i in $(seq 1 "$ROUNDS"); do
  for cipher in "" aes128-gcm@openssh.com; do
    label="openssh sshd"; [ -n "$cipher" ] && label="openssh sshd, aes128-gcm"
    E=$(ssh_e "$SSHD_PORT" "$WORK/sshd/known_hosts" ${cipher:+-c "$cipher"})
    fresh_cache
    t=$(secs rsync "${UPOPTS[@]}" -e "$E" "$DUMP/" "root@127.0.0.1:$WORK/sshd/origin.dump")
    row "$i" "upload   $label" "$t"
    fresh_cache
    mkdir "$WORK/dl"
    t=$(secs rsync --info=progress2 --ignore-missing-args -a -e "$E" "root@127.0.0.1:$WORK/sshd/origin.dump" "$WORK/dl/")
    row "$i" "download $label" "$t"
    same_tree "$DUMP" "$WORK/dl/origin.dump" "the sshd download"
    rm -rf "$WORK/sshd/origin.dump" "$WORK/dl"
  done

  # upgrade-server, as the script: create over HTTP, then HTTPS on the
  # assigned host; transfer/start, rsync, transfer/stop.
  created=$(rpc "$BASE" create "$(jq -nc --rawfile k "$WORK/upgrade_ssh_key.pub" \
    '{contract: "M123456-abcdef", target: "16.0", aim: "test", actuator: "cli", env_vars: [], ssh_key: $k, api_version: "0.2"}')")
  token=$(echo "$created" | jq -r .token); host=$(echo "$created" | jq -r .assigned_host_uri); id=$(echo "$created" | jq -r .request_id)
  HTTPS=https://$host; TOK=$(jq -nc --arg t "$token" '{token: $t}')
  fresh_cache
  s=$(now); started=$(rpc "$HTTPS" transfer/start "$(jq -nc --arg t "$token" '{token: $t, transfer_type: "upload"}')"); e=$(now)
  t_start_up=$(echo "$e - $s" | bc -l)
  echo "$started" | jq -r .known_hosts > "$WORK/known_hosts"
  E=$(ssh_e "$(echo "$started" | jq -r .ssh_port)" "$WORK/known_hosts")
  rss_mark "$SPID"
  t=$(secs rsync "${UPOPTS[@]}" -e "$E" "$DUMP/" "odoo@$host:/data/origin.dump")
  rss_growth "$SPID"
  row "$i" "upload   upgrade-server" "$t" "RSS +$growth MiB"
  s=$(now); rpc "$HTTPS" transfer/stop "$TOK" >/dev/null; e=$(now)
  t_stop=$(echo "$e - $s" | bc -l)
  state=$(rpc "$HTTPS" status "$TOK" | jq -r .status)
  [ "$state" = pending ] || { echo "after transfer/stop the request is $state, not pending"; exit 1; }
  upset=$(cd "$WORK/data/requests/$id" && ls -d upload-*/ | head -1); upset=${upset%/}
  same_tree "$DUMP" "$WORK/data/requests/$id/$upset" "the upload stored by upgrade-server"
  printf '%-6s %-40s %8.2f\n' "$i" "  transfer/start (upload)" "$t_start_up"
  printf '%-6s %-40s %8.2f\n' "$i" "  transfer/stop -> pending" "$t_stop"
  extra[start_up]="${extra[start_up]:-} $t_start_up"; extra[stop]="${extra[stop]:-} $t_stop"

  # The download: the request made done with its upload as the upgraded
  # dump (what the pipeline would write there), then the script's pull.
  cp -al "$WORK/data/requests/$id/$upset" "$WORK/data/requests/$id/upgraded.d"
  cp "$WORK/data/requests/$id/$upset.manifest" "$WORK/data/requests/$id/upgraded.d.manifest"
  psql -qX -h "$WORK/data/postgres-run" -U postgres upgrade -c "UPDATE requests SET state = 'done' WHERE id = $id"
  fresh_cache
  s=$(now); started=$(rpc "$HTTPS" transfer/start "$(jq -nc --arg t "$token" '{token: $t, transfer_type: "download"}')"); e=$(now)
  t_start_down=$(echo "$e - $s" | bc -l)
  echo "$started" | jq -r .known_hosts > "$WORK/known_hosts"
  E=$(ssh_e "$(echo "$started" | jq -r .ssh_port)" "$WORK/known_hosts")
  name=$(echo "$started" | jq -r .dump_name)
  fresh_cache
  mkdir "$WORK/dl"
  rss_mark "$SPID"
  srcs=(); for n in "$name" filestore upgrade-report.html upgrade.log; do srcs+=("odoo@$host:/data/$n"); done
  t=$(secs rsync --info=progress2 --ignore-missing-args -a -e "$E" "${srcs[@]}" "$WORK/dl/")
  rss_growth "$SPID"
  row "$i" "download upgrade-server" "$t" "RSS +$growth MiB"
  rpc "$HTTPS" transfer/stop "$TOK" >/dev/null
  same_tree "$DUMP" "$WORK/dl/$name" "the upgrade-server download"
  [ -s "$WORK/dl/upgrade.log" ] || { echo "the download has no upgrade.log"; exit 1; }
  printf '%-6s %-40s %8.2f\n' "$i" "  transfer/start (download)" "$t_start_down"
  extra[start_down]="${extra[start_down]:-} $t_start_down"
  rm -rf "$WORK/dl" "$WORK/data/requests/$id"
done
summary "openssh sshd"
echo "transfer/start of an upload (s):${extra[start_up]}"
echo "transfer/stop -> pending (s):${extra[stop]}"
echo "transfer/start of a download (s):${extra[start_down]}"
echo "max server RSS growth during a transfer: $growth_max MiB"
