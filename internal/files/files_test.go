package files_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/files/s3test"
)

// backends runs fn against a store of each kind: local files, and a real
// S3 protocol server (gofakes3 over HTTP).
func backends(t *testing.T, fn func(t *testing.T, s *files.Store)) {
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: dir, Fsync: true})
		if err != nil {
			t.Fatal(err)
		}
		fn(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv := s3test.Start(t, "bucket")
		s, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir(),
			URL: "s3://bucket/some/prefix", S3: srv.Config()})
		if err != nil {
			t.Fatal(err)
		}
		fn(t, s)
	})
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func read(t *testing.T, s *files.Store, id int64, name files.Name) []byte {
	t.Helper()
	o, err := s.Open(context.Background(), id, name)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// failingReader gives n bytes, then fails as a dropped connection would.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	return k, err
}

func TestReceive(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		first := random(20<<20 + 123) // several parts, several buffers
		got, err := s.Receive(ctx, 7, files.Upload, bytes.NewReader(first), 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Size != int64(len(first)) || got.SHA256 != sum(first) {
			t.Fatalf("received %+v", got)
		}
		if !bytes.Equal(read(t, s, 7, files.Upload), first) {
			t.Fatal("read back differs")
		}
		// A cut stream, or one over the limit, leaves the first upload whole.
		second := random(18 << 20)
		if _, err := s.Receive(ctx, 7, files.Upload, &failingReader{r: bytes.NewReader(second), n: 17 << 20}, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut stream: %v", err)
		}
		if _, err := s.Receive(ctx, 7, files.Upload, bytes.NewReader(second), 1<<20); !errors.Is(err, files.ErrTooLarge) {
			t.Fatalf("over the limit: %v", err)
		}
		if !bytes.Equal(read(t, s, 7, files.Upload), first) {
			t.Fatal("a failed upload changed the stored one")
		}
		list, err := s.List(ctx, 7)
		if err != nil || len(list) != 1 || list[0].Name != files.Upload || list[0].Size != int64(len(first)) {
			t.Fatalf("list shows %+v (%v): a partial file must never show", list, err)
		}
		// Exactly at the limit passes.
		if _, err := s.Receive(ctx, 7, files.Upload, bytes.NewReader(second), int64(len(second))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, s, 7, files.Upload), second) {
			t.Fatal("the complete second upload did not replace the first")
		}
	})
}

func TestRanges(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		data := random(3<<20 + 17)
		if err := s.WriteFile(ctx, 1, files.UpgradedArchive, data); err != nil {
			t.Fatal(err)
		}
		o, err := s.Open(ctx, 1, files.UpgradedArchive)
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		if o.Info().Size != int64(len(data)) {
			t.Fatalf("size %d", o.Info().Size)
		}
		buf := make([]byte, 1000)
		for _, off := range []int64{0, 1 << 20, int64(len(data)) - 1000, 5} {
			if _, err := o.ReadAt(buf, off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, data[off:off+1000]) {
				t.Fatalf("ReadAt %d differs", off)
			}
		}
		if _, err := o.Seek(2<<20, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(o)
		if err != nil || !bytes.Equal(rest, data[2<<20:]) {
			t.Fatalf("Seek then read: %v", err)
		}
	})
}

// TestSequentialReadAt reads an object through an io.SectionReader in
// 32 KiB reads, as the engine feeds pg_restore, mixed with jumps: the
// bytes are the object's and, on S3, sequential reads share requests.
func TestSequentialReadAt(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t, "bucket")
	s, err := files.Open(ctx, slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir(), URL: "s3://bucket/p", S3: srv.Config()})
	if err != nil {
		t.Fatal(err)
	}
	data := random(20<<20 + 17)
	if err := s.WriteFile(ctx, 1, files.UpgradedArchive, data); err != nil {
		t.Fatal(err)
	}
	o, err := s.Open(ctx, 1, files.UpgradedArchive)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	before := srv.Gets()
	var got bytes.Buffer
	if _, err := io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{io.NewSectionReader(o, 0, o.Info().Size)}, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("a sequential read differs")
	}
	if n := srv.Gets() - before; n > 16 {
		t.Errorf("%d GET requests for %d reads of 32 KiB", n, len(data)>>15)
	}
	// Jumps, reads across the window's end, reads past the end.
	buf := make([]byte, 100<<10)
	for i, off := range []int64{5, 5 + 100<<10, 5 + 200<<10, 7 << 20, 7<<20 + 100<<10, 1, int64(len(data)) - 1000, int64(len(data)) - 10, int64(len(data)) + 5, 3 << 20, 3<<20 + 100<<10} {
		n, err := o.ReadAt(buf, off)
		want := max(0, min(int64(len(buf)), int64(len(data))-off))
		if int64(n) != want || (n < len(buf) && err != io.EOF) || (n == len(buf) && err != nil && err != io.EOF) {
			t.Fatalf("read %d at %d: %d bytes, %v", i, off, n, err)
		}
		if n > 0 && !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
			t.Fatalf("read %d at %d differs", i, off)
		}
	}
	// Read still streams from its own offset.
	if _, err := o.Seek(19<<20, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(o)
	if err != nil || !bytes.Equal(rest, data[19<<20:]) {
		t.Fatalf("Seek then read: %v", err)
	}
}

func TestWriterAndLink(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		w, err := s.Create(ctx, 3, files.Notes)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("half"))
		w.Abort()
		if _, err := s.Stat(ctx, 3, files.Notes); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("an aborted write shows: %v", err)
		}
		w, _ = s.Create(ctx, 3, files.Notes)
		w.Write([]byte("<html>report</html>"))
		got, err := w.Commit()
		if err != nil || got.Size != 19 || got.SHA256 != sum([]byte("<html>report</html>")) {
			t.Fatalf("commit: %+v %v", got, err)
		}
		data := random(1 << 20)
		if err := s.WriteFile(ctx, 3, files.Upload, data); err != nil {
			t.Fatal(err)
		}
		if err := s.Link(ctx, 3, files.Upload, files.UpgradedArchive); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, s, 3, files.UpgradedArchive), data) {
			t.Fatal("linked file differs")
		}
		if err := s.Link(ctx, 3, files.Modules, files.UpgradedArchive); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("link of a missing file: %v", err)
		}
		h, err := s.Hash(ctx, 3, files.UpgradedArchive)
		if err != nil || h.SHA256 != sum(data) {
			t.Fatalf("hash %+v %v", h, err)
		}
	})
}

func TestSetsAndRemoval(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		dir := t.TempDir()
		for _, n := range []string{"toc.dat", "3001.dat.gz", "sub/x"} {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o700)
			os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600)
		}
		if _, err := s.CommitDir(ctx, 9, "upload.d/", dir, 0); err != nil {
			t.Fatal(err)
		}
		s.WriteFile(ctx, 9, files.Upload, []byte("u"))
		s.WriteFile(ctx, 10, files.Upload, []byte("other"))
		var names []string
		list, _ := s.List(ctx, 9)
		for _, i := range list {
			names = append(names, fmt.Sprintf("%s:%d", i.Name, i.Size))
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "upload.d/:23,upload:1" {
			t.Fatalf("list: %v", names)
		}
		if err := s.RemovePrefix(ctx, 9, "upload.d/"); err != nil {
			t.Fatal(err)
		}
		if list, _ := s.List(ctx, 9); len(list) != 1 {
			t.Fatalf("after RemovePrefix: %+v", list)
		}
		if keys, _ := files.RawKeys(ctx, s, "9/upload.d"); len(keys) != 0 {
			t.Fatalf("after RemovePrefix the store holds %v", keys)
		}
		ids, err := s.Requests(ctx)
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if err != nil || len(ids) != 2 || ids[0] != 9 || ids[1] != 10 {
			t.Fatalf("requests %v %v", ids, err)
		}
		// RemoveRequest removes a request's files and sets and its staging, only.
		if _, err := s.CommitDir(ctx, 9, "upload.d/", dir, 0); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(s.StagingDir(9), 0o700)
		if err := s.RemoveRequest(ctx, 9); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, 9, files.Upload); !errors.Is(err, files.ErrNotExist) {
			t.Fatal("request 9 keeps its upload")
		}
		if keys, _ := files.RawKeys(ctx, s, "9/"); len(keys) != 0 {
			t.Fatalf("request 9 keeps %v", keys)
		}
		if _, err := os.Stat(s.StagingDir(9)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("request 9 keeps its staging")
		}
		if !bytes.Equal(read(t, s, 10, files.Upload), []byte("other")) {
			t.Fatal("removing request 9 touched request 10")
		}
		if err := s.RemoveRequest(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if list, _ := s.List(ctx, 10); len(list) != 0 {
			t.Fatalf("after RemoveRequest: %+v", list)
		}
	})
}

func TestCommitFile(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		dir := s.StagingDir(4)
		os.MkdirAll(dir, 0o700)
		p := filepath.Join(dir, "upload")
		data := random(5<<20 + 1)
		os.WriteFile(p, data, 0o600)
		got, err := s.CommitFile(ctx, 4, files.Upload, p, nil)
		if err != nil || got.SHA256 != sum(data) || got.Size != int64(len(data)) {
			t.Fatalf("commit %+v %v", got, err)
		}
		if !bytes.Equal(read(t, s, 4, files.Upload), data) {
			t.Fatal("committed file differs")
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("the staged file stays after its commit")
		}
	})
}

// TestCommitFileRefuses: CommitFile takes the file it opened and nothing
// else: a link at the path is not followed, a FIFO is not waited on, a
// hard link to a file of another owner than its folder's is refused; a
// file another user wrote becomes the store's own, mode 0600.
func TestCommitFileRefuses(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		secret := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(secret, []byte("secret"), 0o600)
		for _, tc := range []struct {
			name string
			make func(p string) error
		}{
			{"symlink", func(p string) error { return os.Symlink(secret, p) }},
			{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
			{"foreign hard link", func(p string) error {
				if os.Geteuid() != 0 {
					return errors.New("skip")
				}
				if err := os.Chown(filepath.Dir(p), 65534, 65534); err != nil {
					return err
				}
				return os.Link(secret, p)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "origin.sql")
				if err := tc.make(p); err != nil {
					t.Skip(err)
				}
				done := make(chan error, 1)
				go func() { _, err := s.CommitFile(ctx, 5, files.Upload, p, nil); done <- err }()
				select {
				case err := <-done:
					if !errors.Is(err, files.ErrRefused) {
						t.Fatalf("err = %v, want ErrRefused", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("CommitFile waits on a FIFO")
				}
				if _, err := s.Stat(ctx, 5, files.Upload); !errors.Is(err, files.ErrNotExist) {
					t.Fatalf("something was stored: %v", err)
				}
			})
		}
		if os.Geteuid() == 0 {
			dir := t.TempDir()
			p := filepath.Join(dir, "origin.sql")
			os.WriteFile(p, []byte("select 1;\n"), 0o666)
			os.Chown(dir, 65534, 65534)
			os.Chown(p, 65534, 65534)
			got, err := s.CommitFile(ctx, 6, files.Upload, p, nil)
			if err != nil || got.Size != 10 {
				t.Fatalf("commit: %+v %v", got, err)
			}
			if stored := files.LocalPath(s, "6/"+string(files.Upload)); stored != "" {
				st, err := os.Stat(stored)
				if err != nil {
					t.Fatal(err)
				}
				if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || st.Mode().Perm() != 0o600 {
					t.Fatalf("the stored file is uid %d, mode %v", sys.Uid, st.Mode())
				}
			}
			if !bytes.Equal(read(t, s, 6, files.Upload), []byte("select 1;\n")) {
				t.Fatal("committed file differs")
			}
		}
	})
}

func TestNames(t *testing.T) {
	s, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []files.Name{"", "../x", "a/../../x", "/etc/passwd", ".part-x", "a/.hidden", ".", "a//b",
		"a/b", "upload.d/toc.dat", "upload.d/", "x.manifest", "a\nb", `a\b`} {
		if err := s.WriteFile(context.Background(), 1, n, []byte("x")); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	if err := s.WriteFile(context.Background(), 0, files.Upload, []byte("x")); err == nil {
		t.Error("request 0 accepted")
	}
}

// TestS3Misconfigured: a store that cannot be reached, a missing bucket
// and refused credentials fail at start, naming the setting and never
// printing the secret.
func TestS3Misconfigured(t *testing.T) {
	srv := s3test.Start(t, "bucket")
	ctx := context.Background()
	open := func(url string, cfg files.S3Config) error {
		_, err := files.Open(ctx, slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir(), URL: url, S3: cfg})
		return err
	}
	good := srv.Config()
	if err := open("s3://bucket/p", good); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.SecretKey = "s3cr3t-value-never-printed"
	bad.AccessKey = "wrong-key-id"
	err := open("s3://bucket/p", bad)
	if err == nil || !strings.Contains(err.Error(), "UPGRADE_S3_ACCESS_KEY") || strings.Contains(err.Error(), bad.SecretKey) {
		t.Fatalf("wrong credentials: %v", err)
	}
	if err := open("s3://missing/p", good); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
	down := good
	down.Endpoint = "http://127.0.0.1:1"
	if err := open("s3://bucket/p", down); err == nil || !strings.Contains(err.Error(), "UPGRADE_S3_ENDPOINT") {
		t.Fatalf("unreachable: %v", err)
	}
	for _, u := range []string{"s3:///p", "ftp://x/y", "file://relative", "file:relative"} {
		if err := open(u, good); err == nil || !strings.Contains(err.Error(), "UPGRADE_STORAGE") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// TestImport: staged files replace a request's own only at Apply, which
// completes after an interruption when run again.
func TestImport(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		s.WriteFile(ctx, 1, files.Upload, []byte("old 1"))
		s.WriteFile(ctx, 1, files.Notes, []byte("old notes 1"))
		s.WriteFile(ctx, 2, files.Upload, []byte("old 2"))
		s.WriteFile(ctx, 3, files.Upload, []byte("removed 3"))
		im, err := s.NewImport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := im.Create(ctx, 1, files.Upload)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("new 1"))
		if _, err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := read(t, s, 1, files.Upload); string(got) != "old 1" {
			t.Fatalf("a staged file showed before Apply: %q", got)
		}
		w7, _ := im.Create(ctx, 7, files.Notes) // a request that has no files yet
		w7.Write([]byte("notes 7"))
		if _, err := w7.Commit(); err != nil {
			t.Fatal(err)
		}
		// Discard changes nothing.
		other, err := s.NewImport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ow, _ := other.Create(ctx, 2, files.Upload)
		ow.Write([]byte("never"))
		ow.Commit()
		if err := other.Discard(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Imports(ctx); len(n) != 1 || n[0].Nonce != im.Nonce() || time.Since(n[0].Started) > time.Minute {
			t.Fatalf("imports left: %v", n)
		}
		// Apply twice (a crash after the first): same result.
		for range 2 {
			if err := s.OpenImport(im.Nonce()).Apply(ctx, []int64{1, 2, 7}, []int64{3}); err != nil {
				t.Fatal(err)
			}
		}
		if got := read(t, s, 1, files.Upload); string(got) != "new 1" {
			t.Fatalf("request 1's upload is %q", got)
		}
		if got := read(t, s, 7, files.Notes); string(got) != "notes 7" {
			t.Fatalf("request 7's notes are %q", got)
		}
		for _, c := range []struct {
			id   int64
			name files.Name
		}{{1, files.Notes}, {2, files.Upload}, {3, files.Upload}} {
			if _, err := s.Stat(ctx, c.id, c.name); !errors.Is(err, files.ErrNotExist) {
				t.Errorf("request %d keeps %s after the import: %v", c.id, c.name, err)
			}
		}
		if n, _ := s.Imports(ctx); len(n) != 0 {
			t.Fatalf("imports left after Apply: %v", n)
		}
	})
}

// TestSweepPartials: a dead writer's part file goes; a live writer's stays.
func TestSweepPartials(t *testing.T) {
	dir := t.TempDir()
	s, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	live, err := s.Create(ctx, 5, files.Upload)
	if err != nil {
		t.Fatal(err)
	}
	live.Write([]byte("half"))
	dead := filepath.Join(dir, "requests", "5", ".part-dead")
	os.WriteFile(dead, []byte("left by a crash"), 0o600)
	n, err := s.SweepPartials(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("swept %d: %v", n, err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the dead part file stays")
	}
	if _, err := live.Commit(); err != nil {
		t.Fatalf("the live write lost its part file: %v", err)
	}
	if string(read(t, s, 5, files.Upload)) != "half" {
		t.Fatal("live write damaged")
	}
}

// TestLockStaging: one writer of a request's staging at a time; a waiter
// gets the lock once the holder lets go, or gives up with its context.
func TestLockStaging(t *testing.T) {
	s, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := s.LockStaging(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.LockStaging(short, 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second holder got the lock: %v", err)
	}
	other, err := s.LockStaging(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	got := make(chan *files.Lock, 1)
	go func() {
		l, err := s.LockStaging(ctx, 7)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	first.Release()
	second := <-got
	second.Release()
	second.Release()
}
