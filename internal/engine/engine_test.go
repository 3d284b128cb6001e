package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Exit(m) }

var targets = []string{"12.0", "13.0", "14.0", "15.0", "16.0", "17.0"}

const fixtures = "../dump/testdata/fixtures/"

type env struct {
	t     *testing.T
	eng   *engine.Engine
	root  string // the data directory
	files *files.Store
	url   string
	mu    sync.Mutex
	logs  []string
}

func newEnv(t *testing.T, cfg engine.Config) *env {
	t.Helper()
	for _, tool := range []string{"pg_restore", "pg_dump", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	e := &env{t: t, root: t.TempDir(), url: pgtest.BaseURL(t)}
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: e.root})
	if err != nil {
		t.Fatal(err)
	}
	e.files = fs
	cfg.DatabaseURL, cfg.Files, cfg.WorkDir, cfg.DataRoot, cfg.Targets = e.url, fs, filepath.Join(e.root, "work"), e.root, targets
	cfg.Namespace = fmt.Sprintf("t%d%d", os.Getpid(), time.Now().UnixNano()%100000)
	if cfg.Kind == "" {
		cfg.Kind = engine.Builtin
	}
	eng, err := engine.New(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	e.eng = eng
	return e
}

var nextID = struct {
	sync.Mutex
	n int64
}{n: int64(os.Getpid()) * 1000}

// job stores a fixture as a request's upload.
func (e *env) job(fixture, target, aim string) engine.Job {
	e.t.Helper()
	nextID.Lock()
	nextID.n++
	id := nextID.n
	nextID.Unlock()
	b, err := os.ReadFile(fixtures + fixture)
	if err != nil {
		e.t.Fatal(err)
	}
	e.setUpload(id, b)
	return engine.Job{ID: id, Attempt: 1, Target: target, Aim: aim, Filename: fixture, Upload: files.Upload}
}

// setUpload stores data as request id's upload.
func (e *env) setUpload(id int64, data []byte) {
	e.t.Helper()
	if err := e.files.WriteFile(context.Background(), id, files.Upload, data); err != nil {
		e.t.Fatal(err)
	}
}

// path is where the file store keeps request id's file name.
func (e *env) path(id int64, name files.Name) string {
	return filepath.Join(e.root, "requests", strconv.FormatInt(id, 10), string(name))
}

func (e *env) run(j engine.Job) (engine.Result, error) {
	return e.eng.Run(context.Background(), j, engine.Hooks{Log: func(level, msg string) {
		e.mu.Lock()
		e.logs = append(e.logs, level+": "+msg)
		e.mu.Unlock()
	}})
}

// TestBuiltinEveryFormat upgrades an Odoo 12 database, uploaded in every
// format, to 16.0: the result keeps the upload's format, reads as 16.0,
// and (aim=test) is neutralized; the scratch database is gone.
func TestBuiltinEveryFormat(t *testing.T) {
	e := newEnv(t, engine.Config{})
	for _, f := range []string{"custom.dump", "custom-piped.dump", "custom-z0.dump", "custom-inserts.dump", "custom.dump.gz",
		"tar", "dir.zip", "dir.tar", "sql", "sql.gz", "inserts.sql", "odoo-backup.zip"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			before, err := dump.InspectFile(fixtures + "odoo12." + f)
			if err != nil {
				t.Fatal(err)
			}
			j := e.job("odoo12."+f, "16.0", "test")
			if _, err := e.run(j); err != nil {
				t.Fatalf("run: %v\n%s", err, strings.Join(e.logs, "\n"))
			}
			after, err := dump.InspectFile(e.path(j.ID, files.UpgradedArchive))
			if err != nil {
				t.Fatal(err)
			}
			if after.DatabaseVersion != "16.0" || !after.Neutralized || after.DatabaseUUID != before.DatabaseUUID {
				t.Fatalf("upgraded: %+v", after)
			}
			if !slices.Equal(after.Compressions, before.Compressions) || after.Filestore != before.Filestore {
				t.Fatalf("format changed: %v -> %v (filestore %v -> %v)", before.Compressions, after.Compressions, before.Filestore, after.Filestore)
			}
			for m, v := range after.Modules {
				if !strings.HasPrefix(v, "16.0.") {
					t.Errorf("module %s at %s", m, v)
				}
			}
			for _, a := range []files.Name{files.Notes, files.Modules} {
				if st, err := os.Stat(e.path(j.ID, a)); err != nil || st.Size() == 0 {
					t.Errorf("%s missing: %v", a, err)
				}
			}
		})
	}
	t.Cleanup(func() { assertNoScratch(t, e) })
}

func assertNoScratch(t *testing.T, e *env) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname LIKE 'upgrade_scratch_t' || $1 || '%'`, fmt.Sprint(os.Getpid())).Scan(&n)
	if n != 0 {
		t.Errorf("%d scratch databases left", n)
	}
}

// TestUpgradedDatabase restores the result and looks inside: modules moved,
// scheduled actions and mail servers off, data intact.
func TestUpgradedDatabase(t *testing.T) {
	e := newEnv(t, engine.Config{})
	j := e.job("odoo12.custom.dump", "16.0", "test")
	if _, err := e.run(j); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	check := "upgrade_check_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))
	admin.Exec(ctx, "DROP DATABASE IF EXISTS "+check)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+check); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(ctx, "DROP DATABASE IF EXISTS "+check+" WITH (FORCE)")
	cfg, _ := pgx.ParseConfig(e.url)
	cfg.Database = check
	cfg.RuntimeParams = map[string]string{}
	cmd := exec.Command("pg_restore", "--no-owner", "-d", check, e.path(j.ID, files.UpgradedArchive))
	cmd.Env = append(os.Environ(), "PGHOST="+cfg.Host, "PGPORT="+itoa(int(cfg.Port)), "PGUSER="+cfg.User)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore the result: %v %s", err, out)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var base, state, l10n string
	var crons, mails, partners int
	conn.QueryRow(ctx, `SELECT latest_version, state FROM ir_module_module WHERE name = 'base'`).Scan(&base, &state)
	conn.QueryRow(ctx, `SELECT latest_version FROM ir_module_module WHERE name = 'l10n_be'`).Scan(&l10n)
	conn.QueryRow(ctx, `SELECT count(*) FROM ir_cron WHERE active`).Scan(&crons)
	conn.QueryRow(ctx, `SELECT count(*) FROM ir_mail_server WHERE active`).Scan(&mails)
	conn.QueryRow(ctx, `SELECT count(*) FROM res_partner`).Scan(&partners)
	if base != "16.0.1.3" || state != "installed" || l10n != "16.0.2.0" || crons != 0 || mails != 0 || partners != 300 {
		t.Fatalf("base %s %s, l10n_be %s, active crons %d, mail servers %d, partners %d", base, state, l10n, crons, mails, partners)
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv(t, engine.Config{})
	var ce *engine.CustomerError
	_, err := e.run(e.job("odoo16.custom.dump", "16.0", "test"))
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "16.0") || !strings.Contains(ce.Message, "not newer") {
		t.Fatalf("same version: %v", err)
	}
	_, err = e.run(e.job("odoo16.sql", "12.0", "production"))
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "12.0") {
		t.Fatalf("downgrade: %v", err)
	}
	j := e.job("odoo16.sql", "17.0", "test")
	os.WriteFile(e.path(j.ID, files.Upload), []byte("not a dump at all\n"), 0o600)
	if _, err = e.run(j); !errors.As(err, &ce) || !strings.Contains(ce.Message, "not a database dump") {
		t.Fatalf("garbage: %v", err)
	}
	b, _ := os.ReadFile(fixtures + "odoo16.custom.dump")
	j = e.job("odoo16.sql", "17.0", "test")
	os.WriteFile(e.path(j.ID, files.Upload), b[:len(b)*2/3], 0o600)
	if _, err = e.run(j); !errors.As(err, &ce) {
		t.Fatalf("truncated: %v", err)
	}
	t.Cleanup(func() { assertNoScratch(t, e) })
}

func TestScripts(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "13.0"), 0o755)
	os.MkdirAll(filepath.Join(dir, "16.0"), 0o755)
	os.MkdirAll(filepath.Join(dir, "17.0"), 0o755)
	os.WriteFile(filepath.Join(dir, "13.0", "01_partner.sql"), []byte("UPDATE res_partner SET comment = 'hop 13';\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "16.0", "01_ok.sql"), []byte("SELECT 1;\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "16.0", "02_broken.sql"), []byte("SELECT 1;\n\nSELECT no_such_column FROM res_partner;\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "17.0", "01_never.sql"), []byte("SELECT 1/0;\n"), 0o644)
	e := newEnv(t, engine.Config{ScriptsDir: dir})
	_, err := e.run(e.job("odoo12.sql", "16.0", "production"))
	var ce *engine.CustomerError
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "16.0/02_broken.sql failed at line 3") || !strings.Contains(ce.Message, "no_such_column") {
		t.Fatalf("failing script: %v", err)
	}
	joined := strings.Join(e.logs, "\n")
	if !strings.Contains(joined, "13.0/01_partner.sql") || !strings.Contains(joined, "16.0/01_ok.sql") || strings.Contains(joined, "17.0") {
		t.Fatalf("scripts run:\n%s", joined)
	}
}

func TestCommandEngine(t *testing.T) {
	// A variable of the operator's, which the command reads.
	t.Setenv("OPERATOR_ADDONS", "/srv/addons")
	e := newEnv(t, engine.Config{Kind: engine.Command, Command: `echo "upgrading $UPGRADE_SOURCE_VERSION to $UPGRADE_TARGET_VERSION for $UPGRADE_REQUEST_ID ($UPGRADE_AIM)";
echo "client says $UPG_MODE, target still $UPGRADE_TARGET_VERSION, add-ons still $OPERATOR_ADDONS";
psql -X -q -v ON_ERROR_STOP=1 -c "UPDATE ir_module_module SET latest_version = '$UPGRADE_TARGET_VERSION.9.9' WHERE state = 'installed'"`})
	j := e.job("odoo12.custom.dump", "16.0", "production")
	// The request's env_vars reach the command; the server's own win.
	j.EnvVars = []string{"UPG_MODE=fast", "UPGRADE_TARGET_VERSION=6.0", "OPERATOR_ADDONS=filestore/0a"}
	if _, err := e.run(j); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(e.logs, "\n"))
	}
	if !strings.Contains(strings.Join(e.logs, "\n"), "| upgrading 12.0 to 16.0 for") {
		t.Fatalf("command output not in the log:\n%s", strings.Join(e.logs, "\n"))
	}
	if !strings.Contains(strings.Join(e.logs, "\n"), "| client says fast, target still 16.0, add-ons still /srv/addons") {
		t.Fatalf("env_vars not passed as they should:\n%s", strings.Join(e.logs, "\n"))
	}
	after, err := dump.InspectFile(e.path(j.ID, files.UpgradedArchive))
	if err != nil || after.Modules["base"] != "16.0.9.9" {
		t.Fatalf("after the command: %+v %v", after.Modules, err)
	}
	bad := newEnv(t, engine.Config{Kind: engine.Command, Command: `echo step one; echo "it broke" >&2; exit 3`})
	_, err = bad.run(bad.job("odoo12.sql", "16.0", "test"))
	var ce *engine.CustomerError
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "exit status 3") || !strings.Contains(ce.Message, "it broke") {
		t.Fatalf("failing command: %v", err)
	}
}

func TestPassthrough(t *testing.T) {
	e := newEnv(t, engine.Config{Kind: engine.Passthrough})
	j := e.job("odoo12.custom.dump", "16.0", "test")
	if _, err := e.run(j); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(e.path(j.ID, files.Upload))
	b, _ := os.Stat(e.path(j.ID, files.UpgradedArchive))
	if !os.SameFile(a, b) {
		t.Fatal("the upgraded artifact is not the upload linked")
	}
}

// TestOpenSQL converts every upload format to plain SQL on the fly.
func TestOpenSQL(t *testing.T) {
	e := newEnv(t, engine.Config{})
	for _, f := range []string{"custom.dump", "custom-piped.dump", "custom.dump.gz", "tar", "dir.zip", "dir.tar", "sql", "sql.gz", "odoo-backup.zip"} {
		t.Run(f, func(t *testing.T) {
			j := e.job("odoo16."+f, "17.0", "test")
			info, err := dump.InspectFile(e.path(j.ID, files.Upload))
			if err != nil {
				t.Fatal(err)
			}
			rc, err := e.eng.OpenSQL(context.Background(), j.ID, files.Upload, info.Compressions)
			if err != nil {
				t.Fatal(err)
			}
			sql, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !strings.Contains(string(sql), "16.0.1.3") || !strings.Contains(string(sql), "CREATE TABLE public.res_partner") {
				t.Fatalf("%d bytes of SQL, err %v", len(sql), err)
			}
		})
	}
	if _, err := e.eng.OpenSQL(context.Background(), 1, files.Upload, nil); !errors.Is(err, engine.ErrNoSQL) {
		t.Fatalf("unknown layers: %v", err)
	}
}

// TestArchiveNewerThanPgRestore: a custom archive from pg_dump 17 (1.16)
// fails with both versions named when the local pg_restore is older.
func TestArchiveNewerThanPgRestore(t *testing.T) {
	out, err := exec.Command("pg_restore", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), " 15.") && !strings.Contains(string(out), " 14.") && !strings.Contains(string(out), " 16.") {
		t.Skipf("pg_restore reads archive 1.16 here (%s)", strings.TrimSpace(string(out)))
	}
	e := newEnv(t, engine.Config{})
	j := e.job("odoo16.sql", "18.0", "test")
	if err := os.WriteFile(e.path(j.ID, files.Upload), archive116(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = e.run(j)
	var ce *engine.CustomerError
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "pg_dump 17") || !strings.Contains(ce.Message, "archive 1.16") ||
		!strings.Contains(ce.Message, "pg_restore 1") {
		t.Fatalf("err = %v", err)
	}
}

// archive116 is a minimal custom archive as pg_dump 17 writes it: header,
// one TOC entry, uncompressed COPY data.
func archive116() []byte {
	var b []byte
	i := func(v int64) {
		s := byte(0)
		if v < 0 {
			s, v = 1, -v
		}
		b = append(b, s, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	str := func(s string) { i(int64(len(s))); b = append(b, s...) }
	b = append(b, "PGDMP"...)
	b = append(b, 1, 16, 0, 4, 8, 1, 0) // 1.16, intSize, offSize, custom, no compression
	for _, v := range []int64{0, 0, 0, 1, 0, 126, 0} {
		i(v)
	}
	str("odoo")
	str("17.2")
	str("17.2")
	tables := []struct {
		id              int64
		tag, copy, rows string
	}{
		{1, "ir_module_module", "COPY public.ir_module_module (name, state, latest_version) FROM stdin;\n", "base\tinstalled\t17.0.1.3\n\\.\n"},
	}
	i(int64(len(tables)))
	for _, tb := range tables {
		i(tb.id)
		i(1)
		str("0")
		str("0")
		str(tb.tag)
		str("TABLE DATA")
		i(3)
		str("")
		str("")
		str(tb.copy)
		str("public")
		i(-1)
		i(-1)
		i('r')
		str("odoo")
		str("false")
		i(-1)
		b = append(b, 1, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	for _, tb := range tables {
		b = append(b, 1)
		i(tb.id)
		i(int64(len(tb.rows)))
		b = append(b, tb.rows...)
		i(0)
	}
	return b
}

// TestPgDumpOlderThanTheServer: a pg_dump older than the scratch server
// would fail every request; the server refuses to start instead, naming
// both versions and what to install.
func TestPgDumpOlderThanTheServer(t *testing.T) {
	dir := t.TempDir()
	fake := "#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.22'\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	e := newEnv(t, engine.Config{})
	err := e.eng.Prepare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "pg_dump 12 cannot dump the scratch server, PostgreSQL 1") ||
		!strings.Contains(err.Error(), "postgresql-client-1") {
		t.Fatalf("Prepare: %v", err)
	}
}
