#!/bin/sh
# The whole Upgrade API v1 flow with curl and jq against a running
# upgrade-server: create a request, upload the dump (over HTTP, or SFTP with
# UPLOAD=sftp), process it, wait for the result and download the upgraded
# dump.
#
#   examples/curl-flow.sh [DUMP]
#
# DUMP is a dump file (pg_dump -Fc, plain SQL, an Odoo backup zip…);
# without it the script makes one with pg_dump of the database DATABASE
# names (a name or a postgres:// URL). UPGRADE_URL (default
# http://localhost:8080), TARGET (17.0), AIM (test), CONTRACT, EMAIL and
# POLL (seconds between status calls, 5) change the run. Its files (the
# answers, the SSH key, the upgraded dump) go to the current directory.
set -eu

UPGRADE_URL=${UPGRADE_URL:-http://localhost:8080}
API="$UPGRADE_URL/database/v1"
TARGET=${TARGET:-17.0}
AIM=${AIM:-test}
CONTRACT=${CONTRACT:-M123456-abcdef}
EMAIL=${EMAIL:-john.doe@example.com}
POLL=${POLL:-5}

# failed FILE: print the failures of an answer and say whether there were any.
failed() {
  if [ "$(jq '.failures | length' "$1")" != 0 ]; then
    jq -r '.failures[] | "\(.reason): \(.message)"' "$1" >&2
    return 0
  fi
  return 1
}

DUMP=${1:-}
if [ -z "$DUMP" ]; then
  DUMP=db_name.dump
  pg_dump -Fc -f "$DUMP" "${DATABASE:?give a dump file, or set DATABASE to the database to dump}"
fi
FILENAME=$(basename "$DUMP")

# 1. create: a draft request and its private key.
curl -sS -f "$API/create" --data-urlencode "contract=$CONTRACT" --data-urlencode "email=$EMAIL" \
  --data-urlencode "target=$TARGET" --data-urlencode "aim=$AIM" --data-urlencode "filename=$FILENAME" \
  > create_result.json
if failed create_result.json; then exit 1; fi
REQUEST=$(jq -r .request.id create_result.json)
KEY=$(jq -r .request.key create_result.json)
AUTH="request=$REQUEST&key=$KEY"
echo "request $REQUEST: $(jq -r .request.status_url create_result.json)"

# 2. upload the dump.
if [ "${UPLOAD:-http}" = sftp ]; then
  [ -f id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f id_ed25519
  curl -sS -f "$API/request_sftp_access?$AUTH" -F ssh_keys=@id_ed25519.pub > request_sftp_result.json
  if failed request_sftp_result.json; then exit 1; fi
  SFTP_HOST=$(jq -r .request.hostname request_sftp_result.json)
  SFTP_PORT=$(jq -r .request.sftp_port request_sftp_result.json)
  SFTP_USER=$(jq -r .request.sftp_user request_sftp_result.json)
  SHARED_FILE=$(jq -r .request.shared_file request_sftp_result.json)
  echo "put $DUMP $SHARED_FILE" | sftp -b - -i id_ed25519 -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=known_hosts -P "$SFTP_PORT" "$SFTP_USER@$SFTP_HOST"
else
  curl -sS -f -T "$DUMP" "$API/upload?$AUTH" > upload_result.json
  if failed upload_result.json; then exit 1; fi
fi

# 3. process, then poll status until the request ends.
curl -sS -f "$API/process?$AUTH" > process_result.json
if failed process_result.json; then exit 1; fi
while :; do
  curl -sS -f "$API/status?$AUTH" > status_result.json
  if failed status_result.json; then exit 1; fi
  STATE=$(jq -r .request.state status_result.json)
  case $STATE in
  done | delivered | testing) break ;;
  invalid | cancelled)
    echo "request $REQUEST is $STATE: $(jq -r '.request.customer_message // ""' status_result.json)" >&2
    exit 1
    ;;
  esac
  echo "request $REQUEST is $STATE"
  sleep "$POLL"
done

# 4. download the upgraded dump.
curl -sS -f -o "upgraded_$FILENAME" "$(jq -r .request.upgraded_dump_url status_result.json)"
echo "request $REQUEST is $STATE; the upgraded dump is upgraded_$FILENAME"
