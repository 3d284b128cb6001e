#!/usr/bin/env bash
# The seed's SFTP route: request_sftp_access, the sftp session (put, ls -l,
# put -a, sftp -b -), process, and after done the download with get.
set -eu
cd "$WORKDIR"
SSHOPTS="-i $WORKDIR/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR"

curl -sS "${BASE}/database/v1/create?contract=M123456-abcdef&aim=test&target=16.0&email=john.doe@example.com&filename=openchs.70.cdump" > create_result.json
KEY=$(jq -r .request.key create_result.json)
REQUEST_ID=$(jq -r .request.id create_result.json)
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"

curl -sS "${BASE}/database/v1/request_sftp_access?${URL_PARAMS}" -F ssh_keys=@$WORKDIR/id_ed25519.pub > request_sftp_result.json
failures=$(cat request_sftp_result.json | jq -r '.failures[]')
if [ "$failures" != "" ]; then
  echo $failures | jq -r '.'
  exit 1
fi
SFTP_USER=$(jq -r .request.sftp_user request_sftp_result.json)
SHARED=$(jq -r .request.shared_file request_sftp_result.json)

# put, then ls -l, as in the seed's session
printf 'put %s %s\nls -l %s\n' "$WORKDIR/openchs.70.cdump" "$SHARED" "$SHARED" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" > session.txt
grep -q -- "-rw-rw-rw-" session.txt
# the live size shows in status before process
curl -sS "${BASE}/database/v1/status?${URL_PARAMS}" | jq -e '.request.filesize == "4.00 Mb"' >/dev/null
# echo "put …" | sftp -b - (the seed's scripted form)
echo "put $WORKDIR/openchs.70.cdump $SHARED" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" >/dev/null

curl -sS "${BASE}/database/v1/process?${URL_PARAMS}" > process_result.json
jq -e '.failures == [] and .request.state == "pending" and .request.filesize == "4.00 Mb"' process_result.json >/dev/null \
  || { cat process_result.json; exit 1; }
# after process: read-only
if echo "put $WORKDIR/openchs.70.cdump $SHARED" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" >/dev/null 2>&1; then
  echo "an upload after process was accepted"; exit 1
fi
curl -sS -o original.dump "$(jq -r .request.original_dump_url process_result.json)"
cmp original.dump openchs.70.cdump
echo SEED-SFTP-FLOW-OK
