package files_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/upgrade-server/upgrade-server/internal/files"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// stage writes files into a new folder (names slash-separated).
func stage(t *testing.T, content map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range content {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// manifestOf is the manifest a set of these files has.
func manifestOf(content map[string][]byte) []byte {
	var names []string
	for n := range content {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("upgrade-server set 1\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s %d %s\n", sum(content[n]), len(content[n]), n)
	}
	return b.Bytes()
}

func dumpLike() map[string][]byte {
	return map[string][]byte{
		"toc.dat":           random(20_000),
		"3001.dat.gz":       random(1000),
		"3002.dat.gz":       random(5<<20 + 3), // copied through the overlapped hash
		"3003.dat":          {},
		"blobs.toc":         []byte("16400 blob_16400.dat\n"),
		"filestore/ab/ab12": []byte("attachment"),
		"name with space":   []byte("x"),
	}
}

// TestSetRoundTrip commits a staged folder, reads it back as an fs.FS,
// links it to another set and materializes it into a folder.
func TestSetRoundTrip(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		content := dumpLike()
		dir := stage(t, content)
		set := files.SetName("upload-ab12")
		if set != "upload-ab12/" || !set.IsSet() || files.Upload.IsSet() {
			t.Fatalf("SetName: %q", set)
		}
		got, err := s.CommitDir(ctx, 5, set, dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, b := range content {
			total += int64(len(b))
		}
		if got.Size != total || got.SHA256 != sum(manifestOf(content)) {
			t.Fatalf("received %+v, want %d bytes and the manifest's sha256", got, total)
		}
		st, err := s.Stat(ctx, 5, set)
		if err != nil || st.Size != total || st.ETag != got.SHA256 || st.Name != set {
			t.Fatalf("stat %+v %v", st, err)
		}
		fsys, err := s.OpenSet(ctx, 5, set)
		if err != nil {
			t.Fatal(err)
		}
		if fsys.Received() != got || len(fsys.Members()) != len(content) {
			t.Fatalf("open set: %+v, %d members", fsys.Received(), len(fsys.Members()))
		}
		for _, m := range fsys.Members() {
			if m.Size != int64(len(content[m.Name])) || m.SHA256 != sum(content[m.Name]) {
				t.Errorf("member %+v", m)
			}
			o, err := fsys.OpenMember(m.Name)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(o)
			o.Close()
			if err != nil || !bytes.Equal(b, content[m.Name]) {
				t.Fatalf("%s read back differs (%v)", m.Name, err)
			}
		}
		// fstest reads every file many ways (each read of an S3 object at
		// an offset is a request): a set of small files.
		small := map[string][]byte{"toc.dat": random(3000), "3001.dat.gz": random(100), "filestore/ab/ab12": []byte("x"), "a b": nil}
		if _, err := s.CommitDir(ctx, 5, "small/", stage(t, small), 0); err != nil {
			t.Fatal(err)
		}
		smallSet, err := s.OpenSet(ctx, 5, "small/")
		if err != nil {
			t.Fatal(err)
		}
		if err := fstest.TestFS(smallSet, "toc.dat", "3001.dat.gz", "filestore/ab/ab12", "a b"); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, 5, "small/"); err != nil {
			t.Fatal(err)
		}
		if _, err := fsys.OpenMember("missing.dat"); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("a member the manifest does not list: %v", err)
		}
		// Sets are no files: Open refuses them, the file names refuse slashes.
		if _, err := s.Open(ctx, 5, set); err == nil {
			t.Fatal("Open opened a set")
		}
		if _, err := s.Open(ctx, 5, "upload-ab12/toc.dat"); err == nil {
			t.Fatal("Open opened a set's member")
		}

		// Link: the same members and manifest under another name.
		if err := s.Link(ctx, 5, set, files.UpgradedDir); err != nil {
			t.Fatal(err)
		}
		if err := s.Link(ctx, 5, set, files.UpgradedArchive); err == nil {
			t.Fatal("a set linked to a file")
		}
		up, err := s.OpenSet(ctx, 5, files.UpgradedDir)
		if err != nil || up.Received() != got {
			t.Fatalf("linked set: %v", err)
		}

		// Materialize: a real folder with the same files, read-only.
		out := filepath.Join(t.TempDir(), "upgraded.dump")
		if err := s.Materialize(ctx, 5, files.UpgradedDir, out); err != nil {
			t.Fatal(err)
		}
		for name, b := range content {
			p := filepath.Join(out, filepath.FromSlash(name))
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("materialized %s differs (%v)", name, err)
			}
			if st, _ := os.Stat(p); st.Mode().Perm() != 0o444 {
				t.Errorf("materialized %s has mode %v", name, st.Mode())
			}
		}
		if err := s.Materialize(ctx, 5, files.UpgradedDir, out); err == nil {
			t.Fatal("materialized into a folder that is not empty")
		}
		empty := t.TempDir()
		if err := s.Materialize(ctx, 5, files.UpgradedDir, empty); err != nil {
			t.Fatalf("into an empty folder: %v", err)
		}
		if err := s.Materialize(ctx, 5, "missing/", filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("materialize a missing set: %v", err)
		}

		// Listed once each, members and manifests never.
		list, err := s.List(ctx, 5)
		if err != nil || len(list) != 2 || list[0].Name == list[1].Name || !list[0].Name.IsSet() || !list[1].Name.IsSet() {
			t.Fatalf("list %+v %v", list, err)
		}

		// Committing again replaces the set: old members go.
		smaller := map[string][]byte{"toc.dat": []byte("new toc")}
		got2, err := s.CommitDir(ctx, 5, set, stage(t, smaller), 0)
		if err != nil || got2.SHA256 != sum(manifestOf(smaller)) {
			t.Fatalf("recommit %+v %v", got2, err)
		}
		if keys, _ := files.RawKeys(ctx, s, "5/upload-ab12/"); len(keys) != 1 {
			t.Fatalf("after the second commit the set holds %v", keys)
		}

		if err := s.Remove(ctx, 5, set, files.UpgradedDir); err != nil {
			t.Fatal(err)
		}
		if _, err := s.OpenSet(ctx, 5, set); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("open a removed set: %v", err)
		}
		if keys, _ := files.RawKeys(ctx, s, "5/"); len(keys) != 0 {
			t.Fatalf("after removing the sets the store holds %v", keys)
		}
		if keys, _ := files.RawKeys(ctx, s, ".sets/"); len(keys) != 0 {
			t.Fatalf("markers left: %v", keys)
		}
	})
}

// TestCommitDirLinksLocally: on the local backend a staged file becomes the
// store's by a hard link, made the store's own (mode 0600), and a
// materialized folder links the store's files; a file with another link is
// copied.
func TestCommitDirLinksLocally(t *testing.T) {
	root := t.TempDir()
	s, err := files.Open(context.Background(), discard(), files.Config{Local: root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := stage(t, map[string][]byte{"toc.dat": []byte("toc"), "3001.dat": []byte("data")})
	os.Link(filepath.Join(dir, "3001.dat"), filepath.Join(t.TempDir(), "other-link"))
	if _, err := s.CommitDir(ctx, 3, "upload-x/", dir, 0); err != nil {
		t.Fatal(err)
	}
	stored := filepath.Join(root, "requests", "3", "upload-x")
	a, _ := os.Stat(filepath.Join(dir, "toc.dat"))
	b, _ := os.Stat(filepath.Join(stored, "toc.dat"))
	if !os.SameFile(a, b) || b.Mode().Perm() != 0o600 {
		t.Fatalf("toc.dat was not linked (mode %v)", b.Mode())
	}
	a, _ = os.Stat(filepath.Join(dir, "3001.dat"))
	b, _ = os.Stat(filepath.Join(stored, "3001.dat"))
	if os.SameFile(a, b) {
		t.Fatal("a file with another link was linked")
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := s.Materialize(ctx, 3, "upload-x/", out); err != nil {
		t.Fatal(err)
	}
	a, _ = os.Stat(filepath.Join(out, "toc.dat"))
	b, _ = os.Stat(filepath.Join(stored, "toc.dat"))
	if !os.SameFile(a, b) {
		t.Fatal("materialize copied rather than linked")
	}
}

// TestCommitDirRefuses: a staged folder holding what a set may not hold is
// refused before anything is stored.
func TestCommitDirRefuses(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		for _, tc := range []struct {
			name string
			make func(dir string) error
			want error
		}{
			{"symlink to /etc/passwd", func(dir string) error { return os.Symlink("/etc/passwd", filepath.Join(dir, "3001.dat")) }, files.ErrRefused},
			{"symlinked folder", func(dir string) error { return os.Symlink("/etc", filepath.Join(dir, "sub")) }, files.ErrRefused},
			{"fifo", func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, "3001.dat"), 0o600) }, files.ErrRefused},
			{"newline in a name", func(dir string) error { return os.WriteFile(filepath.Join(dir, "30\n01.dat"), nil, 0o600) }, files.ErrRefused},
			{"backslash in a name", func(dir string) error { return os.WriteFile(filepath.Join(dir, `..\x`), nil, 0o600) }, files.ErrRefused},
			{"rsync temporary", func(dir string) error { return os.WriteFile(filepath.Join(dir, ".3001.dat.Xy12ab"), nil, 0o600) }, files.ErrRefused},
			{"hidden folder", func(dir string) error {
				os.Mkdir(filepath.Join(dir, ".~tmp~"), 0o700)
				return os.WriteFile(filepath.Join(dir, ".~tmp~", "3001.dat"), nil, 0o600)
			}, files.ErrRefused},
			{"device", func(dir string) error {
				return syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o600, 1<<8|3)
			}, files.ErrRefused},
			{"over the limit", func(dir string) error { return os.WriteFile(filepath.Join(dir, "big.dat"), random(2000), 0o600) }, files.ErrTooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := stage(t, map[string][]byte{"toc.dat": random(500)})
				if err := tc.make(dir); err != nil {
					if tc.name == "device" {
						t.Skipf("cannot make a device here: %v", err)
					}
					t.Fatal(err)
				}
				_, err := s.CommitDir(ctx, 4, "upload-bad/", dir, 2000)
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if strings.Contains(err.Error(), dir) {
					t.Errorf("the error shows the server's path: %v", err)
				}
				if keys, _ := files.RawKeys(ctx, s, "4/"); len(keys) != 0 {
					t.Fatalf("a refused folder stored %v", keys)
				}
				if keys, _ := files.RawKeys(ctx, s, ".sets/"); len(keys) != 0 {
					t.Fatalf("a refused folder left markers %v", keys)
				}
			})
		}
		// The folder itself a link: not followed.
		other := stage(t, map[string][]byte{"toc.dat": random(10)})
		link := filepath.Join(t.TempDir(), "origin.dump")
		os.Symlink(other, link)
		if _, err := s.CommitDir(ctx, 4, "upload-link/", link, 0); !errors.Is(err, files.ErrRefused) {
			t.Fatalf("a link to a folder: %v, want ErrRefused", err)
		}
		// A hard link to a file of another owner than the folder's (its
		// writer's): that file's content must not become the upload.
		if os.Geteuid() == 0 {
			secret := filepath.Join(t.TempDir(), "secret")
			os.WriteFile(secret, []byte("secret"), 0o600)
			dir := stage(t, map[string][]byte{"toc.dat": random(10)})
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(secret, filepath.Join(dir, "3001.dat")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CommitDir(ctx, 4, "upload-foreign/", dir, 0); !errors.Is(err, files.ErrRefused) ||
				!strings.Contains(err.Error(), "other links") {
				t.Fatalf("a foreign hard link: %v, want ErrRefused", err)
			}
			if keys, _ := files.RawKeys(ctx, s, "4/upload-foreign"); len(keys) != 0 {
				t.Fatalf("a refused folder stored %v", keys)
			}
		}
		// Exactly at the limit passes; an empty folder is an empty set.
		got, err := s.CommitDir(ctx, 4, "upload-ok/", stage(t, map[string][]byte{"toc.dat": random(2000)}), 2000)
		if err != nil || got.Size != 2000 {
			t.Fatalf("at the limit: %+v %v", got, err)
		}
		if got, err := s.CommitDir(ctx, 4, "empty/", t.TempDir(), 0); err != nil || got.Size != 0 {
			t.Fatalf("empty: %+v %v", got, err)
		}
		if _, err := s.CommitDir(ctx, 4, "upload-ok", t.TempDir(), 0); err == nil {
			t.Fatal("a commit to a file name")
		}
		if _, err := s.CommitDir(ctx, 4, "a/b/", t.TempDir(), 0); err == nil {
			t.Fatal("a commit to a nested set name")
		}
	})
}

// TestSetCrash: a commit that dies before its manifest leaves a set that
// is never opened nor listed, and that the sweep removes once its marker
// is stale (never while it is fresh: a live commit keeps it so).
func TestSetCrash(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		content := dumpLike()
		files.SetCrashAfter(s, 2)
		if _, err := s.CommitDir(ctx, 6, "upload-c/", stage(t, content), 0); err == nil {
			t.Fatal("the simulated crash did not stop the commit")
		}
		files.SetCrashAfter(s, 0)
		if keys, _ := files.RawKeys(ctx, s, "6/upload-c/"); len(keys) < 2 {
			t.Fatalf("the crash left %v", keys)
		}
		if _, err := s.OpenSet(ctx, 6, "upload-c/"); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("an incomplete set opened: %v", err)
		}
		if _, err := s.Stat(ctx, 6, "upload-c/"); !errors.Is(err, files.ErrNotExist) {
			t.Fatalf("an incomplete set has a size: %v", err)
		}
		if list, _ := s.List(ctx, 6); len(list) != 0 {
			t.Fatalf("an incomplete set listed: %+v", list)
		}
		// A complete set beside it is left alone.
		if _, err := s.CommitDir(ctx, 6, "upload-d/", stage(t, content), 0); err != nil {
			t.Fatal(err)
		}
		if n, err := s.SweepPartials(ctx, 0); err != nil || n != 0 {
			t.Fatalf("a fresh marker was swept (%d, %v)", n, err)
		}
		files.SetStaleAfter(s, 0)
		if n, err := s.SweepPartials(ctx, 0); err != nil || n != 1 {
			t.Fatalf("swept %d: %v", n, err)
		}
		if keys, _ := files.RawKeys(ctx, s, "6/upload-c/"); len(keys) != 0 {
			t.Fatalf("the sweep left %v", keys)
		}
		if keys, _ := files.RawKeys(ctx, s, ".sets/"); len(keys) != 0 {
			t.Fatalf("the sweep left markers %v", keys)
		}
		if _, err := s.OpenSet(ctx, 6, "upload-d/"); err != nil {
			t.Fatalf("the sweep touched a complete set: %v", err)
		}
	})
}

// TestCommitFS commits an fs.FS (copies), with the same refusals.
func TestCommitFS(t *testing.T) {
	backends(t, func(t *testing.T, s *files.Store) {
		ctx := context.Background()
		m := fstest.MapFS{"toc.dat": {Data: []byte("toc")}, "ab/cd": {Data: []byte("x")}}
		got, err := s.CommitFS(ctx, 8, files.FilestoreSet, m, 0)
		h := sha256.Sum256(manifestOf(map[string][]byte{"toc.dat": []byte("toc"), "ab/cd": []byte("x")}))
		if err != nil || got.SHA256 != hex.EncodeToString(h[:]) || got.Size != 4 {
			t.Fatalf("%+v %v", got, err)
		}
		m["l"] = &fstest.MapFile{Mode: fs.ModeSymlink, Data: []byte("/etc/passwd")}
		if _, err := s.CommitFS(ctx, 8, files.FilestoreSet, m, 0); !errors.Is(err, files.ErrRefused) {
			t.Fatalf("a link: %v", err)
		}
		if _, err := s.OpenSet(ctx, 8, files.FilestoreSet); err != nil {
			t.Fatalf("a refused commit removed the committed set: %v", err)
		}
	})
}
