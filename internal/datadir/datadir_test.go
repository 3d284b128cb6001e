package datadir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockUploadExcludesAndWaits(t *testing.T) {
	t.Parallel()
	d := New(t.TempDir())
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := d.LockUpload(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := d.LockUpload(short, 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second holder got the lock: %v", err)
	}
	other, err := d.LockUpload(ctx, 8) // another request: no wait
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	got := make(chan *Lock, 1)
	go func() {
		l, err := d.LockUpload(ctx, 7)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	first.Release()
	second := <-got // the waiter gets it once the first lets go
	second.Release()
	second.Release() // twice is harmless
	// The abandoned waiter of the timed-out call did not keep it.
	third, err := d.LockUpload(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	third.Release()
}

func TestSweepParts(t *testing.T) {
	t.Parallel()
	d := New(t.TempDir())
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	dir, _ := d.EnsureRequest(3)
	old := time.Now().Add(-time.Hour)
	write := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("part"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
		return p
	}
	dead := write(".upload-1.part", old)
	young := write(".upload-2.part", time.Now())
	live := write(".upload-3.part", old)
	staged := write(".import-upload", old) // the previous release's import staging
	upload := write("upload", old)
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := HoldOpen(f); err != nil {
		t.Fatal(err)
	}
	removed, err := d.SweepParts(time.Minute)
	if err != nil || len(removed) != 2 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	for p, want := range map[string]bool{dead: false, staged: false, young: true, live: true, upload: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists = %v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
