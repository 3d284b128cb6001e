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

func TestStaging(t *testing.T) {
	t.Parallel()
	d := New(t.TempDir())
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	put := func(id int64, a Artifact, content string) {
		dir, _ := d.EnsureRequest(id)
		os.WriteFile(filepath.Join(dir, string(a)), []byte(content), 0o600)
	}
	put(1, Upload, "old 1")
	put(1, Notes, "old notes 1")
	put(2, Upload, "old 2")

	// Discard changes nothing.
	s, err := d.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := s.Create(1, Upload)
	f.WriteString("new 1")
	f.Close()
	if err := s.Discard(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(d.Path(1, Upload)); string(b) != "old 1" {
		t.Fatalf("discard changed request 1: %q", b)
	}

	// A staging left behind (a crash) is found by Stagings, not while
	// its import runs.
	s, _ = d.NewStaging()
	if live, _ := d.Stagings(); len(live) != 0 {
		t.Fatal("a running import's staging was offered for recovery")
	}
	f, _ = s.Create(1, Upload)
	f.WriteString("new 1")
	f.Close()
	s.AddRequest(3)
	s.Release()
	left, err := d.Stagings()
	if err != nil || len(left) != 1 || left[0].Nonce() != s.Nonce() {
		t.Fatalf("Stagings = %v, %v", left, err)
	}
	if err := left[0].Apply([]int64{2}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(d.Path(1, Upload)); string(b) != "new 1" {
		t.Fatalf("request 1's upload: %q", b)
	}
	if _, err := os.Stat(d.Path(1, Notes)); !os.IsNotExist(err) {
		t.Fatal("request 1 kept a file the import did not have")
	}
	if _, err := os.Stat(d.Request(2)); !os.IsNotExist(err) {
		t.Fatal("the removed request kept its folder")
	}
	if st, err := os.Stat(d.Request(3)); err != nil || !st.IsDir() {
		t.Fatal("request 3 has no folder")
	}
	if left, _ := d.Stagings(); len(left) != 0 {
		t.Fatal("the staging is still there")
	}
}

// TestStagingApplyResumes: Apply interrupted midway (here: a move done by
// hand, as a crash would leave it) completes on the next run.
func TestStagingApplyResumes(t *testing.T) {
	t.Parallel()
	d := New(t.TempDir())
	d.Init()
	for _, id := range []int64{1, 2} {
		dir, _ := d.EnsureRequest(id)
		os.WriteFile(filepath.Join(dir, "upload"), []byte("old"), 0o600)
	}
	s, _ := d.NewStaging()
	for _, id := range []int64{1, 2} {
		f, _ := s.Create(id, Upload)
		f.WriteString("new")
		f.Close()
	}
	// The crash came after request 1's old folder was moved aside.
	if err := os.Rename(d.Request(1), filepath.Join(s.dir, "old-1")); err != nil {
		t.Fatal(err)
	}
	s.Release()
	left, _ := d.Stagings()
	if len(left) != 1 {
		t.Fatalf("%d stagings", len(left))
	}
	if err := left[0].Apply(nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{1, 2} {
		if b, _ := os.ReadFile(d.Path(id, Upload)); string(b) != "new" {
			t.Errorf("request %d: %q", id, b)
		}
	}
}
