// Package datadir lays out the files of the data directory. The request id
// is the only path component taken from outside; names given by clients are
// display names and never become paths.
package datadir

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
