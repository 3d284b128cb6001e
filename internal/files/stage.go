package files

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/token"
)

// NewUploadName is the file a new upload is stored as: a name of its own,
// so an upload that lost its lease can never overwrite a newer one (the
// request record points to the current one; see store.CompleteUpload).
func NewUploadName() Name { return Name("upload-" + token.Hex(8)) }

// AsFile returns the local file under an Object of the file store (for a
// tool that must seek in its input), or false for an object.
func AsFile(o Object) (*os.File, bool) {
	lo, ok := o.(*localObject)
	if !ok {
		return nil, false
	}
	return lo.File, true
}

// StagePath is the local path of a staged file of a request (a writer at
// random offsets writes it, then CommitFile moves it into the store).
func (s *Store) StagePath(id int64, name Name) (string, error) {
	if _, err := key(id, name); err != nil {
		return "", err
	}
	dir := s.StagingDir(id)
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, filepath.FromSlash(string(name)))), 0o700); err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.FromSlash(string(name))), nil
}

// StagedSize is the size of a staged file of a request, false when there
// is none on this host.
func (s *Store) StagedSize(id int64, name Name) (int64, bool) {
	if _, err := key(id, name); err != nil {
		return 0, false
	}
	st, err := os.Stat(filepath.Join(s.StagingDir(id), filepath.FromSlash(string(name))))
	if err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	return st.Size(), true
}

// Lock is an exclusive advisory lock (flock(2)) held through an open file:
// a process that dies releases it, and two holders in one process exclude
// each other as two processes do.
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

// LockStaging takes the lock of a request's staging folder: a writer of a
// staged file holds it for as long as it writes, so a writer that took
// the upload over waits here until the one it replaced (in this process,
// or another sharing this host's folder) has stopped. It waits until ctx
// ends.
func (s *Store) LockStaging(ctx context.Context, id int64) (*Lock, error) {
	dir := s.StagingDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
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
			return nil, fmt.Errorf("files: lock: %w", err)
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
	return false, fmt.Errorf("files: lock: %w", err)
}

func retryEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// SweepPartials removes what interrupted writes left that is older than
// minAge and that no live writer holds: local ".part-*" files (a writer
// locks its own), incomplete multipart uploads in object storage, and the
// members of sets whose commit (or removal) a dead process left without a
// manifest (a live commit keeps its marker fresh; see CommitDir). Several
// processes may sweep at any time: a live write is never touched.
func (s *Store) SweepPartials(ctx context.Context, minAge time.Duration) (int, error) {
	n, err := s.b.sweepPartials(ctx, minAge)
	if err != nil {
		return n, err
	}
	m, err := s.sweepSets(ctx, minAge)
	return n + m, err
}

// Import stages an import's files before its database transaction
// commits; Apply then puts each staged request's files in place of its
// old ones and removes the removed requests' files. Apply is idempotent,
// so a crash after the commit is mended by running it again (Imports
// finds the stagings left).
type Import struct {
	s     *Store
	nonce string
}

func importKey(nonce string) string { return ".imports/" + nonce + "/" }

// importMarker exists while an import's staging holds files to apply.
const importMarker = "staged"

// NewImport starts staging an import.
func (s *Store) NewImport(ctx context.Context) (*Import, error) {
	im := &Import{s: s, nonce: token.Hex(8)}
	sk, err := s.b.create(ctx, importKey(im.nonce)+importMarker)
	if err != nil {
		return nil, err
	}
	if err := sk.commit(); err != nil {
		return nil, err
	}
	return im, nil
}

// OpenImport returns the staging of import nonce (left by a crash).
func (s *Store) OpenImport(nonce string) *Import { return &Import{s: s, nonce: nonce} }

// Nonce names the import; the database record of the import carries it.
func (im *Import) Nonce() string { return im.nonce }

// Create starts writing staged file name of request id.
func (im *Import) Create(ctx context.Context, id int64, name Name) (*Writer, error) {
	k, err := key(id, name)
	if err != nil {
		return nil, err
	}
	sk, err := im.s.b.create(ctx, importKey(im.nonce)+k)
	if err != nil {
		return nil, err
	}
	return &Writer{s: sk, h: nopHash{}}, nil
}

// CreateSetFile starts writing a staged file of set set of request id: the
// member member, or the set's manifest when member is "". Apply puts a
// request's manifests in place after all its other files, so a set shows
// only once its members are there; its members are read only as the
// manifest lists them.
func (im *Import) CreateSetFile(ctx context.Context, id int64, set Name, member string) (*Writer, error) {
	prefixKey, manifestKey, _, err := setKeys(id, set)
	if err != nil {
		return nil, err
	}
	k := manifestKey
	if member != "" {
		if err := checkMember(member); err != nil {
			return nil, err
		}
		k = prefixKey + member
	}
	sk, err := im.s.b.create(ctx, importKey(im.nonce)+k)
	if err != nil {
		return nil, err
	}
	return &Writer{s: sk, h: nopHash{}}, nil
}

// Discard drops the staged files: the import changed nothing.
func (im *Import) Discard(ctx context.Context) error {
	return im.s.b.removePrefix(ctx, importKey(im.nonce))
}

// Apply gives each request in ids exactly the files staged for it (none
// if none were), removes the files of the removed requests, then the
// staging. Run again after a failure or a crash, it completes the job.
func (im *Import) Apply(ctx context.Context, ids, removed []int64) error {
	staged, err := im.s.b.list(ctx, importKey(im.nonce))
	if err != nil {
		return err
	}
	if _, err := im.s.b.stat(ctx, importKey(im.nonce)+importMarker); errors.Is(err, ErrNotExist) {
		ids = nil // applied already: only the cleaning may be left
	} else if err != nil {
		return err
	}
	byID := map[int64][]string{}
	for _, st := range staged {
		k := string(st.Name)[len(importKey(im.nonce)):]
		idPart, _, _ := cut(k)
		id, err := strconv.ParseInt(idPart, 10, 64)
		if err != nil {
			continue
		}
		byID[id] = append(byID[id], k)
	}
	for _, id := range ids {
		keep := map[string]bool{}
		// Members before manifests: a set is complete once it shows.
		sort.SliceStable(byID[id], func(i, j int) bool {
			return !strings.HasSuffix(byID[id][i], ManifestSuffix) && strings.HasSuffix(byID[id][j], ManifestSuffix)
		})
		for _, k := range byID[id] {
			keep[k] = true
			if err := im.s.b.copy(ctx, importKey(im.nonce)+k, k); err != nil && !errors.Is(err, ErrNotExist) {
				return fmt.Errorf("files: apply import: %w", err)
			}
		}
		current, err := im.s.b.list(ctx, prefix(id))
		if err != nil {
			return err
		}
		// Manifests before members: a set goes incomplete first.
		sort.SliceStable(current, func(i, j int) bool {
			return strings.HasSuffix(string(current[i].Name), ManifestSuffix) && !strings.HasSuffix(string(current[j].Name), ManifestSuffix)
		})
		for _, c := range current {
			if !keep[string(c.Name)] {
				if err := im.s.b.remove(ctx, string(c.Name)); err != nil {
					return fmt.Errorf("files: apply import: %w", err)
				}
			}
		}
	}
	for _, id := range removed {
		if err := im.s.RemoveRequest(ctx, id); err != nil {
			return fmt.Errorf("files: apply import: %w", err)
		}
	}
	// The marker goes first: from here on the request files are final.
	if err := im.s.b.remove(ctx, importKey(im.nonce)+importMarker); err != nil {
		return err
	}
	return im.Discard(ctx)
}

func cut(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// ImportStaging is an import's staging left in the store.
type ImportStaging struct {
	Nonce   string
	Started time.Time // when its first file was staged
}

// Imports lists the stagings of imports (each a crash's leftover, or one
// running now: callers check the database record and Started first).
func (s *Store) Imports(ctx context.Context) ([]ImportStaging, error) {
	all, err := s.b.list(ctx, ".imports/")
	if err != nil {
		return nil, err
	}
	byNonce := map[string]int{}
	var out []ImportStaging
	for _, i := range all {
		n, _, _ := cut(string(i.Name)[len(".imports/"):])
		j, ok := byNonce[n]
		if !ok {
			byNonce[n] = len(out)
			out = append(out, ImportStaging{Nonce: n, Started: i.ModTime})
			continue
		}
		if i.ModTime.Before(out[j].Started) {
			out[j].Started = i.ModTime
		}
	}
	return out, nil
}

type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
