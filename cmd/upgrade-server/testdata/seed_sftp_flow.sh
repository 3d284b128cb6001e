#!/usr/bin/env bash
# The seed's SFTP route: request_sftp_access, the sftp session (put, ls -l,
# put -a, sftp -b -), process, and after done the download with get.
set -eu
cd "$WORKDIR"
SSHOPTS="-i $WORKDIR/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR"

curl -sS "${BASE}/database/v1/create?contract=M123456-abcdef&aim=production&target=16.0&email=john.doe@example.com&filename=openchs.70.cdump" > create_result.json
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
SIZE=$(curl -sS "${BASE}/database/v1/status?${URL_PARAMS}" | jq -r '.request.filesize')
[ "$SIZE" != "null" ] || { echo "no live size"; exit 1; }
# echo "put …" | sftp -b - (the seed's scripted form)
echo "put $WORKDIR/openchs.70.cdump $SHARED" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" >/dev/null

curl -sS "${BASE}/database/v1/process?${URL_PARAMS}" > process_result.json
jq -e --arg s "$SIZE" '.failures == [] and .request.state == "pending" and .request.filesize == $s' process_result.json >/dev/null \
  || { cat process_result.json; exit 1; }
# wait for the worker
for _ in $(seq 1 600); do
  curl -sS "${BASE}/database/v1/status?${URL_PARAMS}" > status_result.json
  state=$(jq -r .request.state status_result.json)
  case "$state" in pending|processing) sleep 0.1 ;; *) break ;; esac
done
jq -e '.request.state == "done" and .request.database_version == "12.0" and .request.postgresql == "15"
  and .request.compressions == ["pgdmp_custom","sql"] and .request.processed_at != null' status_result.json >/dev/null \
  || { cat status_result.json; exit 1; }
# after process: read-only, and only upgraded_<filename> is there
if echo "put $WORKDIR/openchs.70.cdump $SHARED" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" >/dev/null 2>&1; then
  echo "an upload after process was accepted"; exit 1
fi
curl -sS -o original.dump "$(jq -r .request.original_dump_url process_result.json)"
cmp original.dump openchs.70.cdump
# the seed's download session
echo "get upgraded_${SHARED} $WORKDIR/upgraded_${SHARED}" | sftp $SSHOPTS -b - -P "$SFTP_PORT" "$SFTP_USER@127.0.0.1" >/dev/null
curl -sS -o upgraded_http.dump "$(jq -r .request.upgraded_dump_url status_result.json)"
cmp upgraded_http.dump "upgraded_${SHARED}"
pg_restore -l "upgraded_${SHARED}" >/dev/null
pg_restore -f - -a -t ir_module_module "upgraded_${SHARED}" | grep -q "16.0.1.3"
curl -sS "$(jq -r .request.notes_url status_result.json)" | grep -q "16.0.1.3"
# both SQL streams, converted from the archives on the fly
curl -sS "$(jq -r .request.upgraded_sql_url status_result.json)" | grep -q "16.0.1.3"
curl -sS "$(jq -r .request.original_sql_url status_result.json)" | grep -q "12.0.1.3"
curl -sS "$(jq -r .request.modules_url status_result.json)" -o modules.zip
python3 -c 'import zipfile,sys; z=zipfile.ZipFile("modules.zip"); assert "16.0.1.3" in z.read("modules.csv").decode()' 
echo SEED-SFTP-FLOW-OK
