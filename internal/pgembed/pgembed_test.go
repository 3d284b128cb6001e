package pgembed_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/pgembed"
)

// clusterDir returns a directory the cluster's user can reach (root runs
// PostgreSQL as the postgres user; t.TempDir is private to root).
func clusterDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgembed-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "postgres")
}

func start(t *testing.T, dir string) *pgembed.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Options{Dir: dir})
	if errors.Is(err, pgembed.ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func query(t *testing.T, c *pgembed.Cluster, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var out string
	if err := conn.QueryRow(ctx, sql).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLifecycle(t *testing.T) {
	dir := clusterDir(t)
	ctx := context.Background()

	c := start(t, dir)
	if got := query(t, c, "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want none (Unix socket only)", got)
	}
	query(t, c, "SELECT 'x' FROM (SELECT 1) s WHERE pg_catalog.set_config('a.b', 'c', false) IS NOT NULL")
	conn, err := pgx.Connect(ctx, c.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	// A second user shares the running server; the first Close leaves it up.
	c2 := start(t, dir)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(t, c2, "SELECT v FROM kept"); got != "survives" {
		t.Fatalf("after the first user left: %q", got)
	}
	if err := c2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the last user's Close left the server running: %v", err)
	}

	// Restart reuses the cluster.
	c3 := start(t, dir)
	if got := query(t, c3, "SELECT v FROM kept"); got != "survives" {
		t.Fatalf("after restart: %q", got)
	}

	// A crash leaves a stale postmaster.pid; the next start recovers.
	if err := c3.Kill(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("expected a stale postmaster.pid after the crash: %v", err)
	}
	c4 := start(t, dir)
	defer c4.Close(ctx)
	if got := query(t, c4, "SELECT v FROM kept"); got != "survives" {
		t.Fatalf("after crash recovery: %q", got)
	}
}

// waitGone waits until the killed postmaster's children have exited, so the
// shared memory is released (what a crash followed by a restart sees).
func waitGone(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		busy := false
		for _, e := range entries {
			b, _ := os.ReadFile(e)
			if len(b) > 0 && containsDir(string(b), dir) {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("postgres processes still running after SIGKILL")
}

func containsDir(cmdline, dir string) bool {
	for i := 0; i+len(dir) <= len(cmdline); i++ {
		if cmdline[i:i+len(dir)] == dir {
			return true
		}
	}
	return false
}

func TestNoBinaries(t *testing.T) {
	_, err := pgembed.Start(context.Background(), pgembed.Options{Dir: clusterDir(t), SearchDirs: []string{t.TempDir()}})
	if !errors.Is(err, pgembed.ErrNoBinaries) {
		t.Fatalf("err = %v, want ErrNoBinaries", err)
	}
	if msg := err.Error(); !containsDir(msg, "install") {
		t.Fatalf("message does not say what to install: %s", msg)
	}
}

// TestAuthentication: the superuser is reachable only from this OS user;
// any other role, only into the database of its own name with its password.
func TestAuthentication(t *testing.T) {
	dir := clusterDir(t)
	c := start(t, dir)
	ctx := context.Background()
	defer c.Close(ctx)
	admin, err := pgx.Connect(ctx, c.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{`CREATE ROLE scratch_a LOGIN PASSWORD 'pw-a'`, `CREATE DATABASE scratch_a OWNER scratch_a`, `CREATE DATABASE scratch_b`} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	admin.Close(ctx)
	as := func(user, password, db string) error {
		cfg, err := pgx.ParseConfig(c.URL(db))
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password = user, password
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			conn.Close(ctx)
		}
		return err
	}
	for _, tc := range []struct {
		user, password, db string
		ok                 bool
	}{
		{"scratch_a", "pw-a", "scratch_a", true},
		{"scratch_a", "wrong", "scratch_a", false},
		{"scratch_a", "pw-a", "scratch_b", false},
		{"scratch_a", "pw-a", "upgrade", false},
		{"scratch_a", "pw-a", "postgres", false},
		{"postgres", "pw-a", "scratch_a", true}, // peer: this OS user
	} {
		err := as(tc.user, tc.password, tc.db)
		if (err == nil) != tc.ok {
			t.Errorf("%s@%s: err = %v, want ok = %v", tc.user, tc.db, err, tc.ok)
		}
	}
	if st, err := os.Stat(c.SocketDir()); err != nil || st.Mode().Perm() != 0o711 {
		t.Fatalf("socket dir: %v %v", st.Mode(), err)
	}
}

// TestRemoveOnStop: a throwaway cluster leaves nothing when its last user stops it.
func TestRemoveOnStop(t *testing.T) {
	dir := clusterDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Options{Dir: dir, RemoveOnStop: true})
	if errors.Is(err, pgembed.ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	sock := c.SocketDir()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, sock} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
}
