#!/usr/bin/env bash
# The seed's bash examples (Upgrade API doc), pointed at $BASE, run in order.
set -eu
cd "$WORKDIR"

CONTRACT=M123456-abcdef
AIM=test
TARGET=16.0
EMAIL=john.doe@example.com
FILENAME=db_name.dump
CREATE_URL="${BASE}/database/v1/create"
URL_PARAMS="contract=${CONTRACT}&aim=${AIM}&target=${TARGET}&email=${EMAIL}&filename=${FILENAME}"
curl -sS "${CREATE_URL}?${URL_PARAMS}" > create_result.json

# check for failures
failures=$(cat create_result.json | jq -r '.failures[]')
if [ "$failures" != "" ]; then
  echo $failures | jq -r '.'
  exit 1
fi
KEY=$(jq -r .request.key create_result.json)
REQUEST_ID=$(jq -r .request.id create_result.json)

UPLOAD_URL="${BASE}/database/v1/upload"
DUMPFILE="openchs.70.cdump"
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"
HEADER="Content-Type: application/octet-stream"
# Verbatim: the unquoted $HEADER splits, so curl also tries a host named
# "application" and exits non-zero after the upload itself went through.
curl -H $HEADER --data-binary "@${DUMPFILE}" "${UPLOAD_URL}?${URL_PARAMS}" > upload_result.json 2>/dev/null || true
[ "$(jq -r '.failures | length' upload_result.json)" = 0 ] || { cat upload_result.json; exit 1; }

REQUEST_SFTP_ACCESS_URL="${BASE}/database/v1/request_sftp_access"
SSH_KEYS=$WORKDIR/authorized_keys
curl -sS "${REQUEST_SFTP_ACCESS_URL}?${URL_PARAMS}" -F ssh_keys=@${SSH_KEYS} > request_sftp_result.json
failures=$(cat request_sftp_result.json | jq -r '.failures[]')
if [ "$failures" != "" ]; then
  echo $failures | jq -r '.'
  exit 1
fi
jq -e --arg u "user_${REQUEST_ID}" '.request.sftp_user == $u and .request.shared_file == "db_name.dump"
  and (.request.sample_command | startswith("sftp -P 2200 user_"))' request_sftp_result.json >/dev/null

PROCESS_URL="${BASE}/database/v1/process"
curl -sS "${PROCESS_URL}?${URL_PARAMS}" > process_result.json
[ "$(jq -r '.failures | length' process_result.json)" = 0 ]

STATUS_URL="${BASE}/database/v1/status"
curl -sS "${STATUS_URL}?${URL_PARAMS}" > status_result.json
jq -e '.failures == [] and .request.state == "pending" and .request.filesize == "8.00 Mb"
  and (.request | keys | length) == 29' status_result.json >/dev/null || { cat status_result.json; exit 1; }

# The original dump comes back byte for byte, and resumes with a range.
curl -sS -o original.dump "$(jq -r .request.original_dump_url status_result.json)"
cmp original.dump "$DUMPFILE"
head -c 1000 "$DUMPFILE" > partial.dump
curl -sS -C - -o partial.dump "$(jq -r .request.original_dump_url status_result.json)"
cmp partial.dump "$DUMPFILE"
echo SEED-FLOW-OK
