// Package pgtest gives tests a real PostgreSQL: UPGRADE_TEST_DATABASE_URL
// when set, otherwise a private cluster started from the machine's server
// binaries (the server's own embedded default, see internal/pgembed). Each
// test gets its own schema, dropped when it ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/upgrade-server/upgrade-server/internal/pgembed"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/migrations"
)

var shared struct {
	once    sync.Once
	url     string
	err     error
	cluster *pgembed.Cluster
}

// Exit runs the tests of a package and then stops the embedded cluster if
// this test binary started one, and exits. Use it from TestMain.
func Exit(m *testing.M) { os.Exit(run(m)) }

// Run is Exit for a TestMain that has more to stop before it exits:
// os.Exit(pgtest.Run(m)) after its own cleanup.
func Run(m *testing.M) int { return run(m) }

func run(m *testing.M) int {
	code := m.Run()
	if shared.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := shared.cluster.Close(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}
	return code
}

// BaseURL returns the URL of the test database, starting the shared
// embedded cluster on first use. The test is skipped, saying what to
// install, only when there is neither a URL nor server binaries.
func BaseURL(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		if u := os.Getenv("UPGRADE_TEST_DATABASE_URL"); u != "" {
			shared.url = u
			return
		}
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("upgrade-server-pgtest-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shared.err = err
			return
		}
		os.Chmod(dir, 0o755) // the cluster may run as another user (root runs it as postgres)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.cluster, shared.err = pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(dir, "postgres"), Database: "upgrade_test",
			RemoveOnStop: true}) // the last test binary to stop it removes it
		if shared.err == nil {
			shared.url = shared.cluster.URL("")
		}
	})
	if errors.Is(shared.err, pgembed.ErrNoBinaries) {
		t.Skipf("no PostgreSQL for tests: set UPGRADE_TEST_DATABASE_URL or install the PostgreSQL server: %v", shared.err)
	}
	if shared.err != nil {
		t.Fatalf("pgtest: %v", shared.err)
	}
	return shared.url
}

// NewSchema creates an empty schema for this test and returns a database
// URL whose search_path is that schema. The schema is dropped at cleanup.
func NewSchema(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// NewStore returns a migrated Store in a fresh schema, with its pool closed
// at cleanup.
func NewStore(t testing.TB) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	u := NewSchema(t)
	ctx := context.Background()
	if err := store.Migrate(ctx, u, migrations.FS); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return store.New(pool, nil), pool
}
