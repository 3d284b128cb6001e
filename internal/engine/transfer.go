package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The folders of rsync transfers live beside the runs' folders (the work
// folder the tools user reaches), named transfer-<id>-upload and
// transfer-<id>-download.
const transferPrefix = "transfer-"

func (e *Engine) transferPath(id int64, direction string) string {
	return filepath.Join(e.work, fmt.Sprintf("%s%d-%s", transferPrefix, id, direction))
}

// ToolsCredential is the OS user the tools run as (nil: this process's
// own), for other programs that handle what clients send (rsync).
func (e *Engine) ToolsCredential() *syscall.Credential { return e.tools.cred }

// UploadDir returns request id's rsync upload folder: owned by the tools
// user (who runs the receiving rsync) and private to it, kept between
// transfers so a client that runs again sends only what differs. One that
// is not such a folder (not a directory, another owner, another mode) is
// made anew.
func (e *Engine) UploadDir(id int64) (string, error) {
	p := e.transferPath(id, "upload")
	if st, err := os.Lstat(p); err == nil {
		sys, ok := st.Sys().(*syscall.Stat_t)
		uid := os.Geteuid()
		if e.tools.cred != nil {
			uid = int(e.tools.cred.Uid)
		}
		if st.IsDir() && ok && int(sys.Uid) == uid && st.Mode().Perm() == 0o700 {
			return p, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("engine: upload folder: %w", err)
	}
	w, err := e.tools.newWorkDir(e.work, filepath.Base(p))
	if err != nil {
		return "", fmt.Errorf("engine: upload folder: %w", err)
	}
	w.root.Close()
	return p, nil
}

// DownloadDir returns a new, empty rsync download folder for request id:
// this process's own, so the tools user running the sending rsync reads
// what is put there and can change nothing, and closed to every other
// user (mode 0750, group the tools user's; 0700 when the tools run as
// this process's user): its path is predictable, the work folder above
// it is traversable, and what is put there is a request's upgraded
// database.
func (e *Engine) DownloadDir(id int64) (string, error) {
	p := e.transferPath(id, "download")
	if err := os.RemoveAll(p); err != nil {
		return "", fmt.Errorf("engine: download folder: %w", err)
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return "", fmt.Errorf("engine: download folder: %w", err)
	}
	if c := e.tools.cred; c != nil {
		if err := os.Chown(p, os.Geteuid(), int(c.Gid)); err != nil {
			os.Remove(p)
			return "", fmt.Errorf("engine: download folder: %w", err)
		}
		if err := os.Chmod(p, 0o750); err != nil {
			os.Remove(p)
			return "", fmt.Errorf("engine: download folder: %w", err)
		}
	}
	return p, nil
}

// RemoveTransferDir removes request id's upload or download folder
// ("upload", "download").
func (e *Engine) RemoveTransferDir(id int64, direction string) error {
	if direction != "upload" && direction != "download" {
		return fmt.Errorf("engine: no %q transfer folder", direction)
	}
	return os.RemoveAll(e.transferPath(id, direction))
}

// TransferDirs lists the request ids that have transfer folders, for the
// start-up sweep of those whose request moved on.
func (e *Engine) TransferDirs() (map[int64][]string, error) {
	entries, err := os.ReadDir(e.work)
	if err != nil {
		return nil, err
	}
	out := map[int64][]string{}
	for _, d := range entries {
		rest, ok := strings.CutPrefix(d.Name(), transferPrefix)
		if !ok {
			continue
		}
		var id int64
		var direction string
		if i := strings.LastIndexByte(rest, '-'); i > 0 {
			if _, err := fmt.Sscan(rest[:i], &id); err == nil {
				direction = rest[i+1:]
			}
		}
		if id > 0 && (direction == "upload" || direction == "download") {
			out[id] = append(out[id], direction)
		}
	}
	return out, nil
}
