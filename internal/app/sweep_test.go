package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/migrations"
)

func testConfig(dataDir, dbURL string) Config {
	return Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: dataDir,
		DatabaseURL: dbURL, Targets: []string{"16.0"}, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: 10 * time.Second, Engine: "passthrough",
		EngineTimeout: time.Hour}
}

func migrated(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	dbURL := pgtest.NewSchema(t)
	ctx := context.Background()
	if err := store.Migrate(ctx, dbURL, migrations.FS); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(ctx) })
	return dbURL, db
}

// TestStartSweepsLeftovers: a start removes what interrupted writes left
// (old part files no writer holds), the staged files of an import that
// never committed, and the files of requests whose deletion a crash
// interrupted; it leaves everything else, files of requests it does not
// know among them (a wrong database URL must not wipe the files).
func TestStartSweepsLeftovers(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ctx := context.Background()
	fs, err := files.Open(ctx, slog.New(slog.DiscardHandler), files.Config{Local: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	fs.WriteFile(ctx, 4, files.Upload, []byte("bytes"))
	fs.WriteFile(ctx, 6, files.Upload, []byte("deleted, files left by a crash"))
	old := time.Now().Add(-2 * time.Hour)
	part := filepath.Join(dataDir, "requests", "4", ".part-123")
	os.WriteFile(part, []byte("part"), 0o600)
	os.Chtimes(part, old, old)
	im, err := fs.NewImport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := im.Create(ctx, 4, files.Upload)
	w.Write([]byte("staged"))
	w.Commit()
	staged, _ := fs.Imports(ctx)
	for _, s := range staged { // as a crash long before the commit leaves it
		filepath.Walk(filepath.Join(dataDir, "requests", ".imports", s.Nonce), func(p string, _ os.FileInfo, _ error) error {
			os.Chtimes(p, old, old)
			return nil
		})
	}
	dbURL, db := migrated(t)
	if _, err := db.Exec(ctx, `INSERT INTO deleted_requests (id) VALUES (6)`); err != nil {
		t.Fatal(err)
	}

	startServe(t, testConfig(dataDir, dbURL))
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Error("the interrupted upload's part file survived the start")
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, "requests", "4", "upload")); err != nil || string(b) != "bytes" {
		t.Errorf("the upload of a request the database does not know was touched: %q, %v", b, err)
	}
	if left, _ := fs.Imports(ctx); len(left) != 0 {
		t.Error("an import that never committed left its staged files")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "requests", "6")); !os.IsNotExist(err) {
		t.Error("a deleted request kept its files")
	}
	var n int
	db.QueryRow(ctx, `SELECT count(*) FROM deleted_requests`).Scan(&n)
	if n != 0 {
		t.Errorf("%d deletion records left", n)
	}
}

// TestStartFinishesACommittedImport: an import whose transaction committed
// but whose files were not all moved (a crash) is finished at the next
// start: staged files in place, removed requests' files gone.
func TestStartFinishesACommittedImport(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ctx := context.Background()
	fs, err := files.Open(ctx, slog.New(slog.DiscardHandler), files.Config{Local: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{4, 5} {
		fs.WriteFile(ctx, id, files.Upload, []byte("old"))
	}
	im, err := fs.NewImport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := im.Create(ctx, 4, files.Upload)
	w.Write([]byte("imported"))
	w.Commit()
	dbURL, db := migrated(t)
	if _, err := db.Exec(ctx, `INSERT INTO imports (nonce, imported, removed) VALUES ($1, '{4}', '{5}')`, im.Nonce()); err != nil {
		t.Fatal(err)
	}

	startServe(t, testConfig(dataDir, dbURL))
	if b, _ := os.ReadFile(filepath.Join(dataDir, "requests", "4", "upload")); string(b) != "imported" {
		t.Errorf("request 4's upload: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "requests", "5")); !os.IsNotExist(err) {
		t.Error("the removed request kept its files")
	}
	var n int
	db.QueryRow(ctx, `SELECT count(*) FROM imports`).Scan(&n)
	if left, _ := fs.Imports(ctx); len(left) != 0 || n != 0 {
		t.Errorf("%d stagings and %d import records left", len(left), n)
	}
}
