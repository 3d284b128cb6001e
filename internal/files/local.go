package files

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// local keeps files under root/<id>/<name>; a file being written is a
// hidden ".part-*" beside it until it is fsynced and renamed.
type local struct {
	root  string
	fsync bool
}

func newLocal(root string, fsync bool) (*local, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	return &local{root: root, fsync: fsync}, nil
}

func (l *local) describe() string { return "file://" + l.root }

func (l *local) path(key string) string { return filepath.Join(l.root, filepath.FromSlash(key)) }

// flushEvery: dirty pages are pushed to disk as a file streams in, so the
// final fsync is short and memory stays flat.
const flushEvery = 64 << 20

type localSink struct {
	f       *os.File
	dst     string
	fsync   bool
	n       int64
	flushed int64
}

func (l *local) create(ctx context.Context, key string) (sink, error) {
	dst := l.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".part-*")
	if err != nil {
		return nil, err
	}
	// Locked while written: a sweep (of any process sharing the folder)
	// tells it from one a dead writer left.
	if ok, err := tryLock(f); !ok || err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, errors.Join(err, errors.New("files: a new part file is locked"))
	}
	return &localSink{f: f, dst: dst, fsync: l.fsync}, nil
}

func (s *localSink) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.n += int64(n)
	if s.fsync && s.n-s.flushed >= flushEvery {
		startWriteback(s.f, s.flushed, s.n-s.flushed)
		s.flushed = s.n
	}
	return n, err
}

func (s *localSink) commit() error {
	if s.fsync {
		if err := s.f.Sync(); err != nil {
			s.abort()
			return err
		}
	}
	if err := s.f.Close(); err != nil {
		os.Remove(s.f.Name())
		return err
	}
	if err := os.Rename(s.f.Name(), s.dst); err != nil {
		os.Remove(s.f.Name())
		return err
	}
	if s.fsync {
		syncDir(filepath.Dir(s.dst))
	}
	return nil
}

func (s *localSink) abort() {
	s.f.Close()
	os.Remove(s.f.Name())
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

type localObject struct {
	*os.File
	info Info
}

func (o *localObject) Info() Info { return o.info }

func (l *local) open(ctx context.Context, key string) (Object, error) {
	f, err := os.Open(l.path(key))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, ErrNotExist
	}
	return &localObject{File: f, info: Info{Name: Name(key), Size: st.Size(), ModTime: st.ModTime()}}, nil
}

func (l *local) stat(ctx context.Context, key string) (Info, error) {
	st, err := os.Stat(l.path(key))
	if err != nil {
		return Info{}, err
	}
	if !st.Mode().IsRegular() {
		return Info{}, ErrNotExist
	}
	return Info{Name: Name(key), Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (l *local) copy(ctx context.Context, from, to string) error {
	if _, err := l.stat(ctx, from); err != nil {
		return err
	}
	dst := l.path(to)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), ".link-"+filepath.Base(dst))
	os.Remove(tmp)
	if err := os.Link(l.path(from), tmp); err != nil {
		// Another file system, or no hard links: a copy.
		src, err := l.open(ctx, from)
		if err != nil {
			return err
		}
		defer src.Close()
		s, err := l.create(ctx, to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(s, src); err != nil {
			s.abort()
			return err
		}
		return s.commit()
	}
	return os.Rename(tmp, dst)
}

func (l *local) putFile(ctx context.Context, key string, lf *localFile) error {
	dst := l.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if l.fsync {
		lf.f.Sync()
	}
	if err := os.Rename(lf.path, dst); err == nil {
		// What moved is the file opened (not one swapped in at its path
		// since), now the store's own.
		if moved, err := os.Lstat(dst); err == nil && os.SameFile(moved, lf.st) && own(lf) == nil {
			if l.fsync {
				syncDir(filepath.Dir(dst))
			}
			return nil
		}
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	// Another file system, or not the file opened: copy what was opened.
	s, err := l.create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := io.Copy(s, io.NewSectionReader(lf.f, 0, 1<<62)); err != nil {
		s.abort()
		return err
	}
	if err := s.commit(); err != nil {
		return err
	}
	if err := os.Remove(lf.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// own makes the open file lf this process's, mode 0600 (a file another
// user wrote must not stay writable by that user in the store).
func own(lf *localFile) error {
	sys, ok := lf.st.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("files: no owner")
	}
	if euid, egid := os.Geteuid(), os.Getegid(); int(sys.Uid) != euid || int(sys.Gid) != egid {
		if err := lf.f.Chown(euid, egid); err != nil {
			return err
		}
	}
	return lf.f.Chmod(0o600)
}

func (l *local) remove(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := os.Remove(l.path(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (l *local) removePrefix(ctx context.Context, p string) error {
	if strings.HasSuffix(p, "/") {
		return os.RemoveAll(l.path(strings.TrimSuffix(p, "/")))
	}
	return os.RemoveAll(l.path(p))
}

// list returns the complete files under prefix (never a ".part-*").
func (l *local) list(ctx context.Context, p string) ([]Info, error) {
	var out []Info
	root := l.path(strings.TrimSuffix(p, "/"))
	err := filepath.WalkDir(root, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && fp == root {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") || !d.Type().IsRegular() {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(l.root, fp)
		out = append(out, Info{Name: Name(filepath.ToSlash(rel)), Size: st.Size(), ModTime: st.ModTime()})
		return nil
	})
	return out, err
}

func (l *local) children(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(l.root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// sweepPartials removes ".part-*" and ".link-*" files older than minAge
// that no writer holds locked.
func (l *local) sweepPartials(ctx context.Context, minAge time.Duration) (int, error) {
	n := 0
	err := filepath.WalkDir(l.root, func(fp string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasPrefix(d.Name(), ".part-") || strings.HasPrefix(d.Name(), ".link-")) {
			return nil
		}
		st, err := d.Info()
		if err != nil || time.Since(st.ModTime()) < minAge {
			return nil
		}
		f, err := os.Open(fp)
		if err != nil {
			return nil
		}
		defer f.Close()
		if ok, err := tryLock(f); ok && err == nil && os.Remove(fp) == nil {
			n++
		}
		return nil
	})
	return n, err
}

func (l *local) parallel() int { return 2 }

// linkFile makes a staged file the store's by a hard link: only a plain
// file with no other link, of this process's user (or of any, when it is
// root), on the same file system. The link is checked to be the very file
// opened, then made this process's user's, mode 0600, as every file of
// the store. With fsync on, the file's fsync starts then, in the
// background: lf.synced reports it.
func (l *local) linkFile(ctx context.Context, key string, lf *localFile) (bool, error) {
	sys, ok := lf.st.Sys().(*syscall.Stat_t)
	if !ok || sys.Nlink != 1 || !lf.st.Mode().IsRegular() {
		return false, nil
	}
	euid, egid := os.Geteuid(), os.Getegid()
	if int(sys.Uid) != euid && euid != 0 {
		return false, nil
	}
	dst := l.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return false, err
	}
	if err := os.Link(lf.path, dst); err != nil {
		return false, nil // another file system, or links refused: a copy
	}
	undo := func() (bool, error) { return false, os.Remove(dst) }
	st, err := os.Lstat(dst)
	if err != nil || !os.SameFile(st, lf.st) {
		return undo()
	}
	if int(sys.Uid) != euid || int(sys.Gid) != egid {
		if err := lf.f.Chown(euid, egid); err != nil {
			return undo()
		}
	}
	if err := lf.f.Chmod(0o600); err != nil {
		return undo()
	}
	if l.fsync {
		// The caller hashes the file meanwhile and waits for this before
		// the set's manifest is written: until then the set does not
		// count, so a crash that loses the data loses an incomplete set.
		synced := make(chan error, 1)
		go func() { synced <- lf.f.Sync() }()
		lf.synced = synced
	}
	return true, nil
}

// linkOut hard-links a stored file to dst, read-only (the mode is the
// file's: the store never writes a file in place, it replaces it).
func (l *local) linkOut(ctx context.Context, key, dst string) (bool, error) {
	if err := os.Link(l.path(key), dst); err != nil {
		return false, nil
	}
	return true, os.Chmod(dst, 0o444)
}

func (l *local) syncDirs(prefixKey string, members []SetMember) {
	if !l.fsync {
		return
	}
	done := map[string]bool{}
	for _, m := range members {
		dir := filepath.Dir(l.path(prefixKey + m.Name))
		if !done[dir] {
			done[dir] = true
			syncDir(dir)
		}
	}
	syncDir(filepath.Dir(l.path(strings.TrimSuffix(prefixKey, "/"))))
}
