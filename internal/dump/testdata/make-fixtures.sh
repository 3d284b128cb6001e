#!/usr/bin/env bash
# Builds an Odoo-shaped database and dumps it in every format the server
# reads. Usage: make-fixtures.sh OUTDIR SERIES   (SERIES: 12.0 or 16.0)
# Connects with libpq's environment (PGHOST, PGPORT, PGUSER) or
# FIXTURE_DATABASE_URL (a postgres:// URL of a database to connect to first).
# The dumps are small and synthetic: no real data.
set -euo pipefail
OUT=$1
SERIES=${2:-16.0}
mkdir -p "$OUT"
DB="odoo_fixture_$$_${RANDOM}"
base() { if [ -n "${FIXTURE_DATABASE_URL:-}" ]; then echo "$FIXTURE_DATABASE_URL"; else echo "postgres"; fi; }
dburl() {
  if [ -n "${FIXTURE_DATABASE_URL:-}" ]; then
    python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit((p.scheme,p.netloc,"/"+sys.argv[2],p.query,p.fragment)))' "$FIXTURE_DATABASE_URL" "$DB"
  else echo "$DB"; fi
}
psql -qX -v ON_ERROR_STOP=1 -d "$(base)" -c "CREATE DATABASE $DB"
trap 'psql -qX -d "$(base)" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT

if [ "$SERIES" = "16.0" ]; then TXT=jsonb; TR=1; else TXT=text; TR=0; fi
v() { echo "'$SERIES.$1'"; }
psql -qX -v ON_ERROR_STOP=1 -d "$(dburl)" <<SQL
CREATE TABLE ir_module_category (id serial PRIMARY KEY, name $TXT);
CREATE TABLE ir_module_module (
    id serial PRIMARY KEY, create_uid integer, create_date timestamp, write_date timestamp, write_uid integer,
    website varchar, summary $TXT, name varchar NOT NULL, author varchar, icon varchar, state varchar(16),
    latest_version varchar, shortdesc $TXT, category_id integer REFERENCES ir_module_category(id), description $TXT,
    application boolean DEFAULT false, demo boolean DEFAULT false, web boolean DEFAULT false, license varchar(32),
    sequence integer DEFAULT 100, auto_install boolean DEFAULT false, to_buy boolean DEFAULT false,
    maintainer varchar, published_version varchar, url varchar, contributors text, menus_by_module text,
    reports_by_module text, views_by_module text);
CREATE TABLE ir_module_module_dependency (id serial PRIMARY KEY, module_id integer REFERENCES ir_module_module(id) ON DELETE CASCADE, name varchar);
CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar NOT NULL UNIQUE, value text NOT NULL, create_date timestamp, write_date timestamp);
CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar, email varchar, comment text, active boolean DEFAULT true);
CREATE TABLE ir_attachment (id serial PRIMARY KEY, name varchar, store_fname varchar, checksum varchar(40), db_datas bytea, file_size integer, mimetype varchar);
CREATE TABLE ir_cron (id serial PRIMARY KEY, cron_name varchar, active boolean DEFAULT true, interval_number integer, interval_type varchar);
CREATE TABLE ir_mail_server (id serial PRIMARY KEY, name varchar, smtp_host varchar, active boolean DEFAULT true);
INSERT INTO ir_module_category (name) VALUES ($( [ $TR = 1 ] && echo "'{\"en_US\": \"Hidden\"}'" || echo "'Hidden'"));
INSERT INTO ir_module_module (name, state, latest_version, shortdesc, category_id, license, author, summary, description) VALUES
  ('base', 'installed', $(v 1.3), $( [ $TR = 1 ] && echo "'{\"en_US\": \"Base\"}'" || echo "'Base'"), 1, 'LGPL-3', 'Odoo S.A.', NULL, $( [ $TR = 1 ] && echo "'{\"en_US\": \"The kernel\\\\nof Odoo\\tneeded\"}'" || echo "E'The kernel\\nof Odoo\\tneeded'")),
  ('web', 'installed', $(v 1.0), NULL, 1, 'LGPL-3', 'Odoo S.A.', NULL, NULL),
  ('mail', 'installed', $(v 1.10), NULL, 1, 'LGPL-3', 'Odoo S.A.', NULL, NULL),
  ('sale', 'uninstalled', NULL, NULL, 1, 'LGPL-3', 'Odoo S.A.', NULL, NULL),
  ('l10n_be', 'to upgrade', $(v 2.0), NULL, 1, 'LGPL-3', 'Odoo S.A.', $( [ $TR = 1 ] && echo "'{\"en_US\": \"Tab\\\\tand ''quote''\"}'" || echo "E'Tab\\tand ''quote'''"), NULL);
INSERT INTO ir_module_module_dependency (module_id, name) VALUES (2, 'base'), (3, 'base'), (3, 'web');
INSERT INTO ir_config_parameter (key, value) VALUES
  ('database.create_date', '2019-05-02 10:11:12'),
  ('database.uuid', '$( [ $SERIES = 16.0 ] && echo 3c1c7d2e-8a8b-11ee-9b6a-0242ac120002 || echo a1b2c3d4-6cb0-11e9-8f2b-0242ac110002)'),
  ('database.secret', 'not-a-real-secret'),
  ('web.base.url', 'http://localhost:8069');
INSERT INTO res_partner (name, email, comment) SELECT 'Partner ' || i, 'p' || i || '@example.com', repeat('x', i % 50) FROM generate_series(1, 300) i;
INSERT INTO ir_attachment (name, store_fname, checksum, file_size, mimetype) VALUES
  ('logo.png', '0a/0a1b2c3d4e5f60718293a4b5c6d7e8f901234567', '0a1b2c3d4e5f60718293a4b5c6d7e8f901234567', 5, 'image/png'),
  ('notes.txt', '9f/9f8e7d6c5b4a39281706f5e4d3c2b1a098765432', '9f8e7d6c5b4a39281706f5e4d3c2b1a098765432', 11, 'text/plain');
INSERT INTO ir_cron (cron_name, interval_number, interval_type) VALUES ('Mail: send queue', 1, 'minutes'), ('Backup', 1, 'days');
INSERT INTO ir_mail_server (name, smtp_host) VALUES ('Outgoing', 'smtp.example.com');
SQL

P="odoo${SERIES%%.*}"
DBURL=$(dburl)
pg_dump --no-owner -Fc -f "$OUT/$P.custom.dump" "$DBURL"
pg_dump --no-owner -Fc "$DBURL" | cat > "$OUT/$P.custom-piped.dump"
pg_dump --no-owner -Fc -Z0 -f "$OUT/$P.custom-z0.dump" "$DBURL"
pg_dump --no-owner -Fc --inserts -f "$OUT/$P.custom-inserts.dump" "$DBURL"
pg_dump --no-owner -Ft -f "$OUT/$P.tar" "$DBURL"
rm -rf "$OUT/$P.dir" && pg_dump --no-owner -Fd -f "$OUT/$P.dir" "$DBURL"
(cd "$OUT/$P.dir" && rm -f "../$P.dir.zip" && python3 -c 'import sys,zipfile,os; z=zipfile.ZipFile(sys.argv[1],"w",zipfile.ZIP_DEFLATED); [z.write(f, "origin.dump/"+f) for f in sorted(os.listdir("."))]' "../$P.dir.zip")
tar -C "$OUT" -cf "$OUT/$P.dir.tar" "$P.dir"
rm -rf "$OUT/$P.dir"
pg_dump --no-owner -Fp -f "$OUT/$P.sql" "$DBURL"
gzip -9 -c "$OUT/$P.sql" > "$OUT/$P.sql.gz"
gzip -9 -c "$OUT/$P.custom-piped.dump" > "$OUT/$P.custom.dump.gz"
pg_dump --no-owner --inserts -f "$OUT/$P.inserts.sql" "$DBURL"
# Odoo's database-manager backup: dump.sql first, manifest.json, filestore/.
python3 - "$OUT/$P.sql" "$OUT/$P.odoo-backup.zip" "$SERIES" <<'PY'
import json, sys, zipfile
sql, out, series = sys.argv[1:]
z = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
z.write(sql, "dump.sql")
z.writestr("manifest.json", json.dumps({"odoo_dump": "1", "db_name": "fixture", "version": series,
    "version_info": [int(series.split(".")[0]), 0, 0, "final", 0, ""], "major_version": series,
    "pg_version": "15.0", "modules": {"base": series + ".1.3", "web": series + ".1.0"}}, indent=4))
z.writestr("filestore/0a/0a1b2c3d4e5f60718293a4b5c6d7e8f901234567", b"\x89PNG\n")
z.writestr("filestore/9f/9f8e7d6c5b4a39281706f5e4d3c2b1a098765432", b"hello notes")
z.close()
PY
