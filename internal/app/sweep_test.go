package app

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/migrations"
)

// TestStartSweepsLeftovers: a start removes the part files of uploads a
// crash interrupted and the staged files of an import that never
// committed, and leaves everything else.
func TestStartSweepsLeftovers(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	data := datadir.New(dataDir)
	if err := data.Init(); err != nil {
		t.Fatal(err)
	}
	dir, _ := data.EnsureRequest(4)
	old := time.Now().Add(-2 * time.Hour)
	part := filepath.Join(dir, ".upload-123.part")
	upload := filepath.Join(dir, "upload")
	for _, p := range []string{part, upload} {
		os.WriteFile(p, []byte("bytes"), 0o600)
		os.Chtimes(p, old, old)
	}
	staging, err := data.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := staging.Create(4, datadir.Upload)
	f.WriteString("staged")
	f.Close()
	staging.Release() // as a crash before the commit leaves it

	startServe(t, Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: dataDir,
		DatabaseURL: pgtest.NewSchema(t), Targets: []string{"16.0"}, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: 10 * time.Second, Engine: "passthrough",
		EngineTimeout: time.Hour})
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Error("the interrupted upload's part file survived the start")
	}
	if b, err := os.ReadFile(upload); err != nil || string(b) != "bytes" {
		t.Errorf("the upload was touched: %q, %v", b, err)
	}
	if left, _ := data.Stagings(); len(left) != 0 {
		t.Error("an import that never committed left its staged files")
	}
}

// TestStartFinishesACommittedImport: an import whose transaction committed
// but whose files were not all moved (a crash) is finished at the next
// start: staged folders in place, removed requests' folders gone.
func TestStartFinishesACommittedImport(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	data := datadir.New(dataDir)
	data.Init()
	for _, id := range []int64{4, 5} {
		dir, _ := data.EnsureRequest(id)
		os.WriteFile(filepath.Join(dir, "upload"), []byte("old"), 0o600)
	}
	staging, err := data.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := staging.Create(4, datadir.Upload)
	f.WriteString("imported")
	f.Close()
	staging.Release()
	dbURL := pgtest.NewSchema(t)
	ctx := context.Background()
	if err := store.Migrate(ctx, dbURL, migrations.FS); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, `INSERT INTO imports (nonce, removed) VALUES ($1, '{5}')`, staging.Nonce()); err != nil {
		t.Fatal(err)
	}

	startServe(t, Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: dataDir,
		DatabaseURL: dbURL, Targets: []string{"16.0"}, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: 10 * time.Second, Engine: "passthrough",
		EngineTimeout: time.Hour})
	if b, _ := os.ReadFile(data.Path(4, datadir.Upload)); string(b) != "imported" {
		t.Errorf("request 4's upload: %q", b)
	}
	if _, err := os.Stat(data.Request(5)); !os.IsNotExist(err) {
		t.Error("the removed request kept its folder")
	}
	var n int
	db.QueryRow(ctx, `SELECT count(*) FROM imports`).Scan(&n)
	if left, _ := data.Stagings(); len(left) != 0 || n != 0 {
		t.Errorf("%d stagings and %d import records left", len(left), n)
	}
}
