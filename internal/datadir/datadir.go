// Package datadir lays out the files of the data directory. The request id
// is the only path component taken from outside; names given by clients are
// display names and never become paths.
package datadir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Artifact names one file the pipeline writes for a request.
type Artifact string

// The files of a request's folder.
const (
	Upload          Artifact = "upload"       // the dump as received (HTTP upload or SFTP shared file)
	OriginalSQL     Artifact = "original.sql" // the upload as plain SQL, when the pipeline kept one
	UpgradedArchive Artifact = "upgraded"     // the upgraded dump, in the upload's own format
	UpgradedSQL     Artifact = "upgraded.sql" // the upgraded dump as plain SQL
	Notes           Artifact = "notes.html"   // the upgrade report
	Modules         Artifact = "modules.zip"  // the installed modules
)

// Dir is a data directory.
type Dir struct{ root string }

// New returns the data directory rooted at root.
func New(root string) Dir { return Dir{root: root} }

// Root is the directory itself.
func (d Dir) Root() string { return d.root }

// Request is the folder of request id.
func (d Dir) Request(id int64) string {
	return filepath.Join(d.root, "requests", strconv.FormatInt(id, 10))
}

// Path is the path of one artifact of request id.
func (d Dir) Path(id int64, a Artifact) string { return filepath.Join(d.Request(id), string(a)) }

// EnsureRequest creates the folder of request id (private to this user).
func (d Dir) EnsureRequest(id int64) (string, error) {
	dir := d.Request(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("datadir: %w", err)
	}
	return dir, nil
}

// ForgetRequest removes the folder of request id, if any: for an id the
// database has just handed out, whatever is there is left from a request
// it no longer has.
func (d Dir) ForgetRequest(id int64) error {
	if d.root == "" {
		return nil
	}
	if err := os.RemoveAll(d.Request(id)); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return nil
}

// Init creates the data directory. It is traversable by other users (0711)
// so an embedded PostgreSQL running as its own user can reach
// <root>/postgres; the requests folder stays private.
func (d Dir) Init() error {
	if err := os.MkdirAll(d.root, 0o711); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(d.root, "requests"), 0o700); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	// Traversable by the tools user, whose runs' folders live in it.
	if err := os.MkdirAll(d.Work(), 0o711); err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	return nil
}

// PartPattern names the temporary files HTTP uploads stream into (in the
// request's folder), renamed to Upload once complete.
const PartPattern = ".upload-*.part"

// uploadLock is the file whose lock a writer of a request's upload holds.
const uploadLock = ".upload.lock"

// Lock is an exclusive advisory lock (flock(2)) held through an open file:
// a process that dies releases it, and two holders in one process exclude
// each other as two processes do. Several processes sharing a data
// directory need a file system with working flock (a local disk, NFSv4).
type Lock struct {
	f    *os.File
	once sync.Once
}

// Release frees the lock. Releasing twice is harmless.
func (l *Lock) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() { l.f.Close() }) // closing the descriptor drops the lock
}

// LockUpload takes the lock of request id's upload: every writer of the
// upload file (an SFTP write handle for as long as it is open, an HTTP
// upload while it renames its file into place, a truncation) holds it, so
// a writer that took the upload over waits here until the one it replaced
// has stopped, in this process or another. It waits until ctx ends.
func (d Dir) LockUpload(ctx context.Context, id int64) (*Lock, error) {
	dir, err := d.EnsureRequest(id)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, uploadLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	return lockWait(ctx, f)
}

// lockWait locks f, waiting until ctx ends; f is closed on failure. The
// wait is a blocking flock in its own goroutine (no polling); when ctx
// ends first, that goroutine releases the lock as soon as it gets it.
func lockWait(ctx context.Context, f *os.File) (*Lock, error) {
	ok, err := tryLock(f)
	if err != nil || ok {
		if err != nil {
			f.Close()
			return nil, err
		}
		return &Lock{f: f}, nil
	}
	got := make(chan error, 1)
	go func() {
		got <- retryEINTR(func() error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) })
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("datadir: lock: %w", err)
		}
		return &Lock{f: f}, nil
	case <-ctx.Done():
		go func() {
			<-got
			f.Close()
		}()
		return nil, ctx.Err()
	}
}

// tryLock takes f's lock if it is free.
func tryLock(f *os.File) (bool, error) {
	err := retryEINTR(func() error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) })
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return false, nil
	}
	return false, fmt.Errorf("datadir: lock: %w", err)
}

func retryEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// HoldOpen locks a file its writer has open (an upload's part file), so
// SweepParts can tell it from one a dead writer left. The lock lasts until
// f is closed.
func HoldOpen(f *os.File) error {
	ok, err := tryLock(f)
	if err == nil && !ok {
		err = errors.New("datadir: the file is locked by another writer")
	}
	return err
}

// SweepParts removes the part files of interrupted uploads: those older
// than minAge that no live writer holds (HoldOpen). A writer locks its part
// file just after creating it; minAge (the upload lease) keeps the sweep
// off a file created that very moment. Several processes sharing the data
// directory may sweep at any time: a live upload is never touched. It
// returns the paths removed.
func (d Dir) SweepParts(minAge time.Duration) ([]string, error) {
	dirs, err := os.ReadDir(filepath.Join(d.root, "requests"))
	if err != nil {
		return nil, fmt.Errorf("datadir: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, de := range dirs {
		if _, err := strconv.ParseInt(de.Name(), 10, 64); err != nil || !de.IsDir() {
			continue
		}
		dir := filepath.Join(d.root, "requests", de.Name())
		parts, _ := filepath.Glob(filepath.Join(dir, PartPattern))
		// .import-* files: the staged files of the previous release's import.
		old, _ := filepath.Glob(filepath.Join(dir, ".import-*"))
		for _, p := range append(parts, old...) {
			st, err := os.Stat(p)
			if err != nil || time.Since(st.ModTime()) < minAge {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			if ok, err := tryLock(f); ok && err == nil {
				if err := os.Remove(p); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, p)
				}
			}
			f.Close()
		}
	}
	return removed, errors.Join(errs...)
}
