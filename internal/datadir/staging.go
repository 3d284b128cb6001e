package datadir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// stagingPrefix names an import's staging folder in <data>/requests (the
// same file system as the request folders it replaces, so moves are
// renames).
const stagingPrefix = ".import-"

// Staging holds an import's files before its database transaction
// commits: requests/.import-<nonce>/<id>/<artifact>. Discard drops it
// (the transaction failed: nothing changed); Apply moves each staged
// request folder into place, replacing the old one whole, and removes the
// folders of the requests the import deleted. Apply is idempotent, so a
// process that crashes after the commit finishes the job at its next
// start (Stagings). An import holds the staging folder's lock while it
// runs, so another process never takes a live one for a leftover.
type Staging struct {
	d     Dir
	nonce string
	dir   string
	lock  *Lock
}

// NewStaging starts an import's staging folder.
func (d Dir) NewStaging() (*Staging, error) {
	b := make([]byte, 8)
	rand.Read(b)
	nonce := hex.EncodeToString(b)
	dir := filepath.Join(d.root, "requests", stagingPrefix+nonce)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datadir: staging: %w", err)
	}
	s, ok, err := d.openStaging(nonce)
	if err != nil || !ok {
		os.RemoveAll(dir)
		return nil, errors.Join(err, errors.New("datadir: staging: locked"))
	}
	return s, nil
}

// Stagings opens the staging folders left by imports that are not running
// (a crash, or a failure while moving files), each locked for the caller.
func (d Dir) Stagings() ([]*Staging, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "requests"))
	if err != nil {
		return nil, fmt.Errorf("datadir: stagings: %w", err)
	}
	var out []*Staging
	for _, e := range entries {
		nonce, ok := strings.CutPrefix(e.Name(), stagingPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		s, ok, err := d.openStaging(nonce)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (d Dir) openStaging(nonce string) (*Staging, bool, error) {
	dir := filepath.Join(d.root, "requests", stagingPrefix+nonce)
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("datadir: staging: %w", err)
	}
	ok, err := tryLock(f)
	if err != nil || !ok {
		f.Close()
		return nil, false, err
	}
	return &Staging{d: d, nonce: nonce, dir: dir, lock: &Lock{f: f}}, true, nil
}

// Nonce names the staging; the import's database record carries it.
func (s *Staging) Nonce() string { return s.nonce }

// AddRequest stages request id with no files yet (Apply then leaves it
// without files).
func (s *Staging) AddRequest(id int64) error {
	if err := os.MkdirAll(s.requestDir(id), 0o700); err != nil {
		return fmt.Errorf("datadir: staging: %w", err)
	}
	return nil
}

// Create creates the staged file a of request id.
func (s *Staging) Create(id int64, a Artifact) (*os.File, error) {
	if err := s.AddRequest(id); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.requestDir(id), string(a)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datadir: staging: %w", err)
	}
	return f, nil
}

func (s *Staging) requestDir(id int64) string { return filepath.Join(s.dir, strconv.FormatInt(id, 10)) }

// Discard removes the staging folder: the import changed nothing.
func (s *Staging) Discard() error {
	defer s.lock.Release()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("datadir: staging: %w", err)
	}
	return nil
}

// Apply puts every staged request folder in place of the old one and
// removes the folders of the removed requests, then the staging folder.
// Run again after a failure or a crash, it completes the job. Until it
// returns nil the staging keeps its lock.
func (s *Staging) Apply(removed []int64) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("datadir: apply import: %w", err)
	}
	for _, e := range entries {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || !e.IsDir() {
			continue
		}
		target := s.d.Request(id)
		old := filepath.Join(s.dir, "old-"+e.Name())
		if _, err := os.Stat(old); err == nil {
			// An earlier attempt moved the old folder aside already;
			// whatever is at target now came after and goes too.
			if err := os.RemoveAll(target); err != nil {
				return fmt.Errorf("datadir: apply import: %w", err)
			}
		} else if err := os.Rename(target, old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("datadir: apply import: %w", err)
		}
		if err := os.Rename(filepath.Join(s.dir, e.Name()), target); err != nil {
			return fmt.Errorf("datadir: apply import: %w", err)
		}
	}
	for _, id := range removed {
		if err := os.RemoveAll(s.d.Request(id)); err != nil {
			return fmt.Errorf("datadir: apply import: %w", err)
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("datadir: apply import: %w", err)
	}
	s.lock.Release()
	return nil
}

// Release gives the staging up without changing it (a later start
// completes or discards it).
func (s *Staging) Release() { s.lock.Release() }
