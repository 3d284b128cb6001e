#!/usr/bin/env bash
# Builds, once, the Odoo 12-shaped database of bench/pipeline.sh and bench/s3.sh
# (the test fixture plus 7 million partners and 400 000 attachments, about
# 2 GiB of table data) and dumps it twice into bench/out:
#   odoo12-2g.custom.dump         pg_dump -Fc (zlib, with TOC offsets)
#   odoo12-2g.custom-piped.dump   pg_dump -Fc -Z0 | cat (no offsets)
# Does nothing when both exist. Uses libpq's PGHOST/PGUSER (default
# 127.0.0.1, postgres) and a database of its own, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
BIG=$(pwd)/bench/out/odoo12-2g
[ -f "$BIG.custom.dump" ] && [ -f "$BIG.custom-piped.dump" ] && exit 0
mkdir -p "$(dirname "$BIG")"
DB=bench_odoo_$$
trap 'psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
echo "building the Odoo-shaped database (a few minutes, once)"
psql -qX -d postgres -c "CREATE DATABASE $DB"
pg_restore --no-owner -d "$DB" internal/dump/testdata/fixtures/odoo12.custom.dump
psql -qX -d "$DB" -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO res_partner (name, email, comment)
  SELECT 'Partner ' || i, 'p' || i || '@example.com', md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) || md5((i * 17)::text) || md5((i * 19)::text)
  FROM generate_series(1, 7000000) i;
INSERT INTO ir_attachment (name, mimetype, db_datas, file_size)
  SELECT 'file ' || i || '.bin', 'application/octet-stream', decode(repeat(md5(i::text), 64), 'hex'), 1024
  FROM generate_series(1, 400000) i;
SQL
pg_dump --no-owner -Fc -d "$DB" -f "$BIG.custom.dump.tmp" && mv "$BIG.custom.dump.tmp" "$BIG.custom.dump"
pg_dump --no-owner -Fc -Z0 -d "$DB" | cat > "$BIG.custom-piped.dump.tmp" && mv "$BIG.custom-piped.dump.tmp" "$BIG.custom-piped.dump"
