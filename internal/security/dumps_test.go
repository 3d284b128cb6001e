package security_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// fixtures are Odoo-shaped dumps in every format, made by
// internal/dump/testdata/make-fixtures.sh.
const fixtures = "../dump/testdata/fixtures/"

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtures + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// afterHeader inserts lines into a plain SQL dump right after pg_dump's
// preamble (the SET lines), before the first table.
func afterHeader(t testing.TB, sql []byte, lines string) []byte {
	t.Helper()
	anchor := []byte("SET default_table_access_method = heap;\n")
	i := bytes.Index(sql, anchor)
	if i < 0 {
		t.Fatal("the fixture has no SET default_table_access_method line")
	}
	i += len(anchor)
	return append(append(append([]byte{}, sql[:i]...), lines...), sql[i:]...)
}

// atEnd appends SQL to a plain dump.
func atEnd(sql []byte, lines string) []byte {
	return append(append([]byte{}, sql...), lines...)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	z.Write(b)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipEntry is one member of a zip the tests build.
type zipEntry struct {
	name string
	body []byte
	mode os.FileMode // 0: a plain file
}

func zipped(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.mode != 0 {
			h.SetMode(e.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// odooBackup is an Odoo backup zip around a plain SQL dump.
func odooBackup(t testing.TB, sql []byte, extra ...zipEntry) []byte {
	t.Helper()
	entries := append([]zipEntry{{name: "dump.sql", body: sql}, {name: "manifest.json", body: []byte(`{"version": "12.0"}`)}}, extra...)
	return zipped(t, entries...)
}

// marker is a path in the shared temporary folder that a successful attack
// would create (as the PostgreSQL server's or the tools' OS user); the
// test checks it never appears.
func marker(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	p := filepath.Join(os.TempDir(), "upgrade-security-"+hex.EncodeToString(b))
	t.Cleanup(func() { os.Remove(p) })
	return p
}

func assertAbsent(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		b, _ := os.ReadFile(p)
		t.Fatalf("the attack left %s (%q): it ran", p, b)
	}
}

// assertRefused checks that a request ended invalid with a reason that
// contains want (case-insensitively).
func assertRefused(t testing.TB, r record, want string) {
	t.Helper()
	if r.State != "invalid" {
		t.Fatalf("state %s (customer_message %q), want invalid", r.State, message(r))
	}
	if !strings.Contains(strings.ToLower(message(r)), strings.ToLower(want)) {
		t.Fatalf("customer_message %q does not say %q", message(r), want)
	}
}

// superConn connects to the test server as its superuser (to make dumps
// and check what an attack changed).
func superConn(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pgtest.BaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if db != "" {
		cfg.Database = db
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgDumpOf restores the Odoo 12 fixture into a fresh database as the
// superuser, runs extra SQL there, and dumps it with pg_dump in format
// ("c", "d", "t", "p"): how an attacker makes a dump with objects the
// server would have to create. A directory dump comes back as a zip of
// the folder.
func pgDumpOf(t testing.TB, extra, format string) []byte {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	db := "security_src_" + hex.EncodeToString(b)
	admin := superConn(t, "")
	ctx := context.Background()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") })
	cfg := admin.Config()
	url := fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", cfg.User, db, cfg.Host, cfg.Port)
	psql := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-")
	psql.Stdin = strings.NewReader(string(fixture(t, "odoo12.sql")) + "\n" + extra)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("make the source database: %v\n%s", err, out)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "dump")
	if o, err := exec.Command("pg_dump", "--no-owner", "-F"+format, "-f", out, "-d", url).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, o)
	}
	if format != "d" {
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var entries []zipEntry
	files, _ := os.ReadDir(out)
	for _, f := range files {
		data, _ := os.ReadFile(filepath.Join(out, f.Name()))
		entries = append(entries, zipEntry{name: "origin.dump/" + f.Name(), body: data})
	}
	return zipped(t, entries...)
}

// events returns a request's log through the admin API.
func (c *client) events(id int64) []string {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/admin/v1/requests/%d", c.srv.URL, id), nil)
	req.Header.Set("Authorization", "Bearer "+c.srv.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Events []struct {
			Message string `json:"message"`
		} `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, e := range body.Events {
		out = append(out, e.Message)
	}
	return out
}

// download fetches a file URL.
func download(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
