package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// TestCurlFlowScript runs examples/curl-flow.sh as README shows it, against
// a whole server: once making its dump with pg_dump of a small database
// and uploading over HTTP, once given a dump and uploading over SFTP.
func TestCurlFlowScript(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "jq", "pg_dump", "sftp", "ssh-keygen", "cmp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	script, err := filepath.Abs("../../examples/curl-flow.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL":     pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":        "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":        "127.0.0.1:0",
		"UPGRADE_SFTP_PUBLIC_PORT": "0",
		"UPGRADE_DATA_DIR":         t.TempDir(),
		"UPGRADE_ENGINE":           "passthrough",
	})
	database := smallDatabase(t)
	run := func(t *testing.T, env []string, args ...string) string {
		t.Helper()
		work := t.TempDir()
		cmd := exec.Command("sh", append([]string{script}, args...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), append([]string{"UPGRADE_URL=" + s.url, "TARGET=16.0", "POLL=1"}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "the upgraded dump is upgraded_") {
			t.Fatalf("curl-flow.sh: %v\n%s\nserver log:\n%s", err, out, s.stderr.String())
		}
		return work
	}
	t.Run("pg_dump and HTTP", func(t *testing.T) {
		work := run(t, []string{"DATABASE=" + database})
		dump, _ := os.ReadFile(filepath.Join(work, "db_name.dump"))
		upgraded, _ := os.ReadFile(filepath.Join(work, "upgraded_db_name.dump"))
		if !bytes.HasPrefix(dump, []byte("PGDMP")) || !bytes.Equal(dump, upgraded) { // passthrough: the upload itself
			t.Fatalf("dump %d bytes, upgraded %d bytes", len(dump), len(upgraded))
		}
	})
	t.Run("a dump file and SFTP", func(t *testing.T) {
		dump, err := filepath.Abs("../../internal/dump/testdata/fixtures/odoo12.custom.dump")
		if err != nil {
			t.Fatal(err)
		}
		work := run(t, []string{"UPLOAD=sftp"}, dump)
		if out, err := exec.Command("cmp", dump, filepath.Join(work, "upgraded_odoo12.custom.dump")).CombinedOutput(); err != nil {
			t.Fatalf("the upgraded dump differs: %s", out)
		}
	})
}

// TestREADMEShowsTheCurlFlow: README shows the script as it is.
func TestREADMEShowsTheCurlFlow(t *testing.T) {
	script, err := os.ReadFile("../../examples/curl-flow.sh")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, script) {
		t.Fatal("README.md does not show examples/curl-flow.sh verbatim")
	}
}

// smallDatabase creates a database with one table for pg_dump, dropped at
// cleanup, and returns its URL.
func smallDatabase(t *testing.T) string {
	t.Helper()
	u := newDatabase(t, "curlflow")
	ctx := context.Background()
	db, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	// The least an upload must hold to be an Odoo database.
	if _, err := db.Exec(ctx, `
		CREATE TABLE ir_module_module (id serial PRIMARY KEY, name varchar NOT NULL, state varchar(16), latest_version varchar);
		CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar NOT NULL UNIQUE, value text NOT NULL);
		CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar);
		INSERT INTO ir_module_module (name, state, latest_version) VALUES ('base', 'installed', '15.0.1.3');
		INSERT INTO ir_config_parameter (key, value) VALUES ('database.uuid', '3c1c7d2e-8a8b-11ee-9b6a-0242ac120002');
		INSERT INTO res_partner (name) VALUES ('Azure Interior')`); err != nil {
		t.Fatal(err)
	}
	return u
}
