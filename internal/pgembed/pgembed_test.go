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
