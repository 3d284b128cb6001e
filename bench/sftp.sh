#!/usr/bin/env bash
# SFTP benchmark (issue 3): a 2 GiB upload and download with OpenSSH's
# `sftp -b` against upgrade-server's daemon and, in the same run, against
# OpenSSH's own sshd with internal-sftp on a spare loopback port (throwaway
# config). Prints throughput both ways and the server's RSS growth.
# Usage: bench/sftp.sh [size, default 2G] [rounds, default 3]   (as root; installs openssh-server if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2G}
ROUNDS=${2:-3}
OUT=$(pwd)/bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/sftp.XXXXXX")
chmod 755 "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

LABEL_WIDTH=34
. bench/openssh.sh
go build -o "$WORK/upgrade-server" ./cmd/upgrade-server

DUMP="$OUT/upload-$SIZE.bin"
if [ ! -f "$DUMP" ]; then
  echo "making $DUMP"
  head -c "$SIZE" /dev/urandom > "$DUMP.tmp" && mv "$DUMP.tmp" "$DUMP"
fi
BYTES=$(stat -c %s "$DUMP")
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
SSHOPTS=(-i "$WORK/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR)
start_sshd "$WORK/id_ed25519.pub" "Subsystem sftp internal-sftp"

# upgrade-server on its embedded PostgreSQL.
SFTP_PORT=$(free_port)
"$WORK/upgrade-server" --http-addr 127.0.0.1:0 --sftp-addr "127.0.0.1:$SFTP_PORT" --data-dir "$WORK/data" \
  --max-upload-bytes 0 --log-level warn >"$WORK/server.out" 2>"$WORK/server.log" &
SPID=$!; pids+=($SPID)
for _ in $(seq 1 600); do grep -q "sftp listening" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/.*http listening on //p' "$WORK/server.out")

echo "sftp: $BYTES bytes with OpenSSH $(ssh -V 2>&1 | cut -d, -f1) sftp -b, $ROUNDS rounds; $(nproc) cores"
printf '%-6s %-34s %8s %8s\n' round target seconds MiB/s
for i in $(seq 1 "$ROUNDS"); do
  # OpenSSH sshd: upload, then download.
  fresh_cache
  t=$(secs sftp "${SSHOPTS[@]}" -P "$SSHD_PORT" -b <(echo "put $DUMP $WORK/sshd-upload.bin") root@127.0.0.1)
  row "$i" "upload   openssh sshd internal-sftp" "$t"
  fresh_cache
  t=$(secs sftp "${SSHOPTS[@]}" -P "$SSHD_PORT" -b <(echo "get $WORK/sshd-upload.bin $WORK/sshd-download.bin") root@127.0.0.1)
  row "$i" "download openssh sshd internal-sftp" "$t"
  cmp -s "$DUMP" "$WORK/sshd-download.bin" || { echo "sshd download differs"; exit 1; }
  rm -f "$WORK/sshd-upload.bin" "$WORK/sshd-download.bin"
  # The same cipher as upgrade-server negotiates, for an equal comparison.
  fresh_cache
  t=$(secs sftp "${SSHOPTS[@]}" -c aes128-gcm@openssh.com -P "$SSHD_PORT" -b <(echo "put $DUMP $WORK/sshd-upload.bin") root@127.0.0.1)
  row "$i" "upload   openssh sshd, aes128-gcm" "$t"
  fresh_cache
  t=$(secs sftp "${SSHOPTS[@]}" -c aes128-gcm@openssh.com -P "$SSHD_PORT" -b <(echo "get $WORK/sshd-upload.bin $WORK/sshd-download.bin") root@127.0.0.1)
  row "$i" "download openssh sshd, aes128-gcm" "$t"
  rm -f "$WORK/sshd-upload.bin" "$WORK/sshd-download.bin"

  # upgrade-server: create, grant, upload, then make it done with the upload as its result.
  create=$(curl -sS "$BASE/database/v1/create?contract=bench&aim=test&target=16.0&email=bench@example.com&filename=bench.dump")
  id=$(echo "$create" | jq -r .request.id); key=$(echo "$create" | jq -r .request.key)
  params="request=$id&key=$(jq -rn --arg k "$key" '$k|@uri')"
  curl -sS "$BASE/database/v1/request_sftp_access?$params" -F "ssh_keys=@$WORK/id_ed25519.pub" | jq -e '.failures == []' >/dev/null
  fresh_cache
  rss_mark "$SPID"
  t=$(secs sftp "${SSHOPTS[@]}" -P "$SFTP_PORT" -b <(echo "put $DUMP bench.dump") "user_$id@127.0.0.1")
  rss_growth "$SPID"
  row "$i" "upload   upgrade-server" "$t" "RSS +$growth MiB"
  # The upload is stored under a name of its own (upload-<hex>), recorded
  # with the request once the daemon has committed it.
  up=
  for _ in $(seq 1 100); do
    up=$(psql -qXtA -h "$WORK/data/postgres-run" -U postgres upgrade -c "SELECT upload_name FROM requests WHERE id = $id")
    [ -n "$up" ] && break; sleep 0.1
  done
  cmp -s "$DUMP" "$WORK/data/requests/$id/$up" || { echo "upgrade-server upload differs"; exit 1; }
  ln "$WORK/data/requests/$id/$up" "$WORK/data/requests/$id/upgraded"
  psql -q -h "$WORK/data/postgres-run" -U postgres upgrade -c "UPDATE requests SET state = 'done' WHERE id = $id"
  fresh_cache
  rss_mark "$SPID"
  t=$(secs sftp "${SSHOPTS[@]}" -P "$SFTP_PORT" -b <(echo "get upgraded_bench.dump $WORK/download.bin") "user_$id@127.0.0.1")
  rss_growth "$SPID"
  row "$i" "download upgrade-server" "$t" "RSS +$growth MiB"
  cmp -s "$DUMP" "$WORK/download.bin" || { echo "upgrade-server download differs"; exit 1; }
  rm -rf "$WORK/data/requests/$id" "$WORK/download.bin"
done
summary "openssh sshd internal-sftp"
echo "max server RSS growth during a transfer: $growth_max MiB (target <= 64)"
