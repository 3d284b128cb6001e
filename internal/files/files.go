// Package files owns the files of upgrade requests: the upload, the
// upgraded dump, the report and the modules list. It is the only code
// that reads or writes them, on local disk (file://) or in S3-compatible
// object storage (s3://), chosen by UPGRADE_STORAGE.
//
// A file appears only once it is complete: local files are written under
// a temporary name, fsynced and renamed; objects are multipart uploads that
// exist only once completed. Writers that write at random offsets (SFTP,
// rsync) work in a local staging folder and commit the finished file, or
// the finished folder as a set of files (CommitDir), which counts only
// once its manifest is written, last (see SetName).
package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Name is one file of a request ("upload-ab12", "notes.html": no slash),
// or one set of files (a name ending with "/", such as "upload-ab12/": see
// SetName and CommitDir).
type Name string

// The files of a request.
const (
	Upload          Name = "upload"      // the dump as received
	UpgradedArchive Name = "upgraded"    // the upgraded dump, in the upload's own format
	Notes           Name = "notes.html"  // the upgrade report
	Modules         Name = "modules.zip" // the modules before and after
	// UpgradedDir is the upgraded dump as a directory-format dump: a set
	// (toc.dat and its data files), for a request whose output is a
	// directory, instead of UpgradedArchive.
	UpgradedDir Name = "upgraded.d/"
	// FilestoreSet is the upgraded database's Odoo filestore, a set, beside
	// UpgradedDir when the run had one.
	FilestoreSet Name = "filestore/"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotExist: no such file (it matches fs.ErrNotExist too).
	ErrNotExist = fs.ErrNotExist
	// ErrTooLarge: a stream passed the size it was allowed.
	ErrTooLarge = errors.New("files: larger than allowed")
)

// NoSpace reports whether err means the local disk is full.
func NoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) }

// Info describes a stored file.
type Info struct {
	Name    Name
	Size    int64
	ModTime time.Time
	// ETag is the store's tag for this version of the file ("" locally).
	ETag string
}

// Object is an open stored file: seekable, readable at offsets (ranges).
type Object interface {
	io.ReadSeekCloser
	io.ReaderAt
	Info() Info
}

// Received is what a write stored.
type Received struct {
	Size   int64
	SHA256 string // hex
}

// Config chooses and configures the store.
type Config struct {
	// URL is file:///path or s3://bucket/prefix; "" is file://<Local>/requests.
	URL string
	// Local is this process's own folder: the file store's default root,
	// and the staging area of writers at random offsets.
	Local string
	// Fsync makes every committed local file durable before it counts.
	Fsync bool
	S3    S3Config
}

// backend is a place to keep files by key ("<id>/<name>").
type backend interface {
	// parallel is how many files a set's operations move at once.
	parallel() int
	// linkFile stores lf as key without copying it where it can (a hard
	// link), false when it cannot and nothing was stored.
	linkFile(ctx context.Context, key string, lf *localFile) (bool, error)
	// linkOut makes dst a read-only hard link to key's file where it can,
	// false when it cannot and nothing was made.
	linkOut(ctx context.Context, key, dst string) (bool, error)
	// syncDirs makes a set's committed members' folders durable.
	syncDirs(prefixKey string, members []SetMember)
	create(ctx context.Context, key string) (sink, error)
	open(ctx context.Context, key string) (Object, error)
	stat(ctx context.Context, key string) (Info, error)
	copy(ctx context.Context, from, to string) error
	// putFile stores the open file lf as key and removes it from its
	// folder (moved there where it can).
	putFile(ctx context.Context, key string, lf *localFile) error
	remove(ctx context.Context, keys ...string) error
	removePrefix(ctx context.Context, prefix string) error
	list(ctx context.Context, prefix string) ([]Info, error)
	children(ctx context.Context) ([]string, error) // the first key elements
	sweepPartials(ctx context.Context, minAge time.Duration) (int, error)
	describe() string
}

// sink is a file being written: it counts only once committed.
type sink interface {
	io.Writer
	commit() error
	abort()
}

// Store is the request files.
type Store struct {
	b      backend
	local  string
	logger *slog.Logger
	// setStale: a set marker this old belongs to a dead process.
	setStale time.Duration
	// crashAfter (tests): a set commit stops as a crash would once this
	// many members are stored.
	crashAfter int
}

// Open returns the store cfg names, after checking it can be reached: an
// unreachable or misconfigured store fails here, naming the setting.
func Open(ctx context.Context, logger *slog.Logger, cfg Config) (*Store, error) {
	if cfg.Local == "" {
		return nil, errors.New("files: no local folder")
	}
	s := &Store{local: cfg.Local, logger: logger.With("component", "files"), setStale: setStale}
	raw := cfg.URL
	if raw == "" {
		raw = "file://" + filepath.Join(cfg.Local, "requests")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("UPGRADE_STORAGE: %q is not a URL (file:///path or s3://bucket/prefix)", raw)
	}
	switch u.Scheme {
	case "file":
		root := u.Path
		if u.Host != "" || root == "" || !filepath.IsAbs(root) {
			return nil, fmt.Errorf("UPGRADE_STORAGE: %q: a file store is file:///absolute/path", raw)
		}
		if s.b, err = newLocal(root, cfg.Fsync); err != nil {
			return nil, fmt.Errorf("UPGRADE_STORAGE: %w", err)
		}
	case "s3":
		if s.b, err = newS3(ctx, u, cfg.S3); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("UPGRADE_STORAGE: %q: the scheme must be file or s3", raw)
	}
	if err := os.MkdirAll(s.stagingRoot(), 0o700); err != nil {
		return nil, fmt.Errorf("files: staging folder: %w", err)
	}
	return s, nil
}

// Describe names the store for logs (no secret).
func (s *Store) Describe() string { return s.b.describe() }

// key is the key of a request's file: a plain name, not hidden, not a set
// nor a set's manifest.
func key(id int64, name Name) (string, error) {
	n := string(name)
	if id <= 0 || n == "" || strings.ContainsAny(n, "/\\") || n == "." || n == ".." || strings.HasPrefix(n, ".") ||
		strings.HasSuffix(n, ManifestSuffix) || strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		if name.IsSet() {
			return "", fmt.Errorf("files: %q of request %d is a set, not a file", n, id)
		}
		return "", fmt.Errorf("files: bad name %q of request %d", n, id)
	}
	return strconv.FormatInt(id, 10) + "/" + n, nil
}

func prefix(id int64) string { return strconv.FormatInt(id, 10) + "/" }

// Open opens a request's file for reading; ErrNotExist when it has none.
func (s *Store) Open(ctx context.Context, id int64, name Name) (Object, error) {
	k, err := key(id, name)
	if err != nil {
		return nil, err
	}
	return s.b.open(ctx, k)
}

// Stat describes a request's file or committed set (its Size the sum of
// its members', its ETag the sha256 of its manifest); ErrNotExist when it
// has none.
func (s *Store) Stat(ctx context.Context, id int64, name Name) (Info, error) {
	if name.IsSet() {
		return s.statSet(ctx, id, name)
	}
	k, err := key(id, name)
	if err != nil {
		return Info{}, err
	}
	info, err := s.b.stat(ctx, k)
	info.Name = name
	return info, err
}

// List returns the files of a request (names relative to it) and its
// committed sets, one entry each (described as Stat does); never a set's
// members or manifest, nor an incomplete set.
func (s *Store) List(ctx context.Context, id int64) ([]Info, error) {
	infos, err := s.b.list(ctx, prefix(id))
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, info := range infos {
		n := strings.TrimPrefix(string(info.Name), prefix(id))
		switch {
		case strings.Contains(n, "/"):
			continue // a set's member
		case strings.HasSuffix(n, ManifestSuffix):
			set, err := s.statSet(ctx, id, SetName(strings.TrimSuffix(n, ManifestSuffix)))
			if errors.Is(err, ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, err
			}
			out = append(out, set)
		default:
			info.Name = Name(n)
			out = append(out, info)
		}
	}
	return out, nil
}

// Writer writes a new version of a file; it replaces the old one only at
// Commit, and Abort (or a failed write) leaves the old one as it was.
type Writer struct {
	s    sink
	h    hashWriter
	n    int64
	done bool
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// Create starts writing a request's file.
func (s *Store) Create(ctx context.Context, id int64, name Name) (*Writer, error) {
	k, err := key(id, name)
	if err != nil {
		return nil, err
	}
	sk, err := s.b.create(ctx, k)
	if err != nil {
		return nil, err
	}
	return &Writer{s: sk, h: sha256.New()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.s.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Commit makes the file count, and returns its size and sha256.
func (w *Writer) Commit() (Received, error) {
	if w.done {
		return Received{}, errors.New("files: writer already closed")
	}
	w.done = true
	if err := w.s.commit(); err != nil {
		return Received{}, err
	}
	return Received{Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}, nil
}

// Abort drops what was written; the file stays as it was. It is a no-op
// after Commit.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		w.s.abort()
	}
}

// WriteFile stores small content as a request's file, atomically.
func (s *Store) WriteFile(ctx context.Context, id int64, name Name, data []byte) error {
	w, err := s.Create(ctx, id, name)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	_, err = w.Commit()
	return err
}

// Link makes to the same content as from (a hard link locally, a copy in
// the store's own side for objects): no byte passes through this process.
// Both are files, or both are sets (to then gets from's members and
// manifest, replacing a set of its name).
func (s *Store) Link(ctx context.Context, id int64, from, to Name) error {
	if from.IsSet() || to.IsSet() {
		if !from.IsSet() || !to.IsSet() {
			return fmt.Errorf("files: cannot link %q to %q: a set links only to a set", string(from), string(to))
		}
		return s.linkSet(ctx, id, from, to)
	}
	kf, err := key(id, from)
	if err != nil {
		return err
	}
	kt, err := key(id, to)
	if err != nil {
		return err
	}
	return s.b.copy(ctx, kf, kt)
}

// Remove removes files and sets of a request (missing ones are no error);
// a set goes manifest first, so it never shows incomplete.
func (s *Store) Remove(ctx context.Context, id int64, names ...Name) error {
	var keys []string
	for _, n := range names {
		if n.IsSet() {
			if err := s.removeSet(ctx, id, n); err != nil {
				return err
			}
			continue
		}
		k, err := key(id, n)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	return s.b.remove(ctx, keys...)
}

// RemovePrefix removes the set p of a request ("upload-ab12/"): its
// manifest, its members, and what an incomplete commit of it left.
func (s *Store) RemovePrefix(ctx context.Context, id int64, p Name) error {
	if !p.IsSet() {
		return fmt.Errorf("files: %q of request %d is not a set name (it ends with /)", string(p), id)
	}
	return s.removeSet(ctx, id, p)
}

// RemoveRequest removes every file and set of a request, and its staging
// folder.
func (s *Store) RemoveRequest(ctx context.Context, id int64) error {
	if err := os.RemoveAll(s.StagingDir(id)); err != nil {
		return err
	}
	if err := s.b.removePrefix(ctx, prefix(id)); err != nil {
		return err
	}
	return s.b.removePrefix(ctx, setMarkers+prefix(id))
}

// Requests returns the ids that have files in the store.
func (s *Store) Requests(ctx context.Context) ([]int64, error) {
	names, err := s.b.children(ctx)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, n := range names {
		if id, err := strconv.ParseInt(n, 10, 64); err == nil && id > 0 && strconv.FormatInt(id, 10) == n {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Hash reads a stored file and returns its size and sha256.
func (s *Store) Hash(ctx context.Context, id int64, name Name) (Received, error) {
	o, err := s.Open(ctx, id, name)
	if err != nil {
		return Received{}, err
	}
	defer o.Close()
	h := sha256.New()
	n, err := io.Copy(h, o)
	if err != nil {
		return Received{}, err
	}
	return Received{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func (s *Store) stagingRoot() string { return filepath.Join(s.local, "staging") }

// StagingDir is a request's local staging folder, for writers at random
// offsets; Commit moves what they finish into the store.
func (s *Store) StagingDir(id int64) string {
	return filepath.Join(s.stagingRoot(), strconv.FormatInt(id, 10))
}

// CommitFile moves a finished local file (of the staging folder, or of a
// folder another user wrote) into the store as name; sum, when known
// (hashed while it was written), spares reading it again. It never
// follows a link at p: a link, a device or pipe, or a file with other
// links whose owner is not its folder's (a hard link to someone else's
// file) is refused (ErrRefused), and what is stored is the file opened,
// made this process's own (mode 0600): a file swapped in at p meanwhile
// is not taken. The folder's writer must have stopped.
func (s *Store) CommitFile(ctx context.Context, id int64, name Name, p string, sum *Received) (Received, error) {
	k, err := key(id, name)
	if err != nil {
		return Received{}, err
	}
	folder, err := os.Stat(filepath.Dir(p))
	if err != nil {
		return Received{}, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return Received{}, fmt.Errorf("files: %q is a symbolic link: %w", filepath.Base(p), ErrRefused)
	}
	if err != nil {
		return Received{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Received{}, err
	}
	if !st.Mode().IsRegular() {
		return Received{}, fmt.Errorf("files: %q is not a plain file: %w", filepath.Base(p), ErrRefused)
	}
	if err := foreignLink(filepath.Base(p), st, folder); err != nil {
		return Received{}, err
	}
	if sum == nil {
		h := sha256.New()
		n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
		if err != nil {
			return Received{}, err
		}
		sum = &Received{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}
	if err := s.b.putFile(ctx, k, &localFile{f: f, path: p, st: st}); err != nil {
		return Received{}, err
	}
	return *sum, nil
}

// foreignLink refuses a file (name, for the message) that has other links
// and is not owned by the owner of the folder it was found in: a hard
// link that folder's writer made to someone else's file, which it could
// not read itself (where fs.protected_hardlinks is off), whose content
// must not become the writer's upload.
func foreignLink(name string, st fs.FileInfo, folder fs.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	dir, dok := folder.Sys().(*syscall.Stat_t)
	if ok && dok && sys.Nlink > 1 && sys.Uid != dir.Uid {
		return fmt.Errorf("files: %q has other links and another owner than its folder: %w", name, ErrRefused)
	}
	return nil
}

// Receive stores what r holds as a request's file, computing its sha256 on
// the way (overlapped with the reading and writing), and replaces the old
// file only once all of it is stored. More than max bytes (if max > 0)
// fails with ErrTooLarge; a write failure is a *WriteError (see NoSpace);
// any other error is the reader's.
func (s *Store) Receive(ctx context.Context, id int64, name Name, r io.Reader, max int64) (Received, error) {
	w, err := s.Create(ctx, id, name)
	if err != nil {
		return Received{}, &WriteError{err}
	}
	if max > 0 {
		r = &limitReader{r: r, left: max}
	}
	n, sum, err := copyHashing(ctx, w.s, r)
	if err != nil {
		w.Abort()
		return Received{Size: n}, err
	}
	w.done = true
	if err := w.s.commit(); err != nil {
		return Received{Size: n}, &WriteError{err}
	}
	return Received{Size: n, SHA256: hex.EncodeToString(sum)}, nil
}

// WriteError marks a failure of the store, not of the data's source.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "files: write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, ErrTooLarge
		}
		return l.r.Read(p)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

const (
	copyBufSize = 1 << 20
	copyBuffers = 4
)

// copyHashing copies src to dst and returns the byte count and sha256. The
// hash runs in its own goroutine on the buffers already written, so
// hashing overlaps reading and writing; memory stays at four buffers.
func copyHashing(ctx context.Context, dst io.Writer, src io.Reader) (int64, []byte, error) {
	free := make(chan []byte, copyBuffers)
	for range copyBuffers {
		free <- make([]byte, copyBufSize)
	}
	toHash := make(chan []byte, copyBuffers)
	h := sha256.New()
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range toHash {
			h.Write(b)
			free <- b[:cap(b)]
		}
	}()
	var n int64
	var err error
	for err == nil {
		if err = ctx.Err(); err != nil {
			break
		}
		buf := <-free
		var k int
		k, err = fill(src, buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				err = &WriteError{werr}
			}
			n += int64(k)
			toHash <- buf[:k]
		} else {
			free <- buf
		}
	}
	close(toHash)
	<-hashed
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, h.Sum(nil), err
}

// fill reads until buf is full or src ends; io.EOF means a clean end.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := src.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
