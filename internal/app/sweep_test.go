package app

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// TestStartSweepsLeftovers: a start removes the part files of uploads a
// crash interrupted, and leaves everything else.
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
}
