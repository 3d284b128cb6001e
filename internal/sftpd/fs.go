package sftpd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// errBusy: another upload (an HTTP upload or another SFTP handle) holds the
// request's upload lease.
var errBusy = errors.New("another upload of this request is in progress; one writer at a time")

// fsHandler is one session's view of its request: pkg/sftp's Fileread,
// Filewrite, OpenFile, Filecmd and Filelist, all answering "permission
// denied" for anything but the one visible file.
type fsHandler struct {
	ctx      context.Context
	logger   *slog.Logger
	requests RequestStore
	data     datadir.Dir
	lease    time.Duration
	id       int64
	writers  atomic.Int32 // this session's open write handles
	metrics  *metrics.Metrics
}

// view is what the session may see and do right now.
type view struct {
	name     string // the one visible file, "" for none
	artifact datadir.Artifact
	writable bool
	req      store.Request
}

// current reads the request again, so a session follows its state (after
// process a draft session's file becomes read-only).
func (h *fsHandler) current() (view, error) {
	r, err := h.requests.Request(h.ctx, h.id)
	if err != nil {
		h.logger.Error("sftp: read request", "err", err)
		return view{}, sftp.ErrSSHFxFailure
	}
	name := input.ShownName(r.Filename) // never a raw name from elsewhere (an import)
	switch r.State {
	case store.StateDraft:
		return view{name: name, artifact: datadir.Upload, writable: true, req: r}, nil
	case store.StateQueued, store.StateProcessing, store.StateTesting:
		return view{name: name, artifact: datadir.Upload, req: r}, nil
	case store.StateDone, store.StateDelivered:
		return view{name: "upgraded_" + name, artifact: datadir.UpgradedArchive, req: r}, nil
	}
	return view{req: r}, nil
}

// target checks that p names the visible file.
func (h *fsHandler) target(p string) (view, error) {
	v, err := h.current()
	if err != nil {
		return v, err
	}
	if v.name == "" || cleanPath(p) != "/"+v.name {
		return v, sftp.ErrSSHFxPermissionDenied
	}
	return v, nil
}

func cleanPath(p string) string { return path.Clean("/" + p) }

// Fileread opens the visible file for reading.
func (h *fsHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	v, err := h.target(r.Filepath)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(h.data.Path(h.id, v.artifact))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, sftp.ErrSSHFxNoSuchFile
	}
	if err != nil {
		h.logger.Error("sftp: open for reading", "err", err)
		return nil, sftp.ErrSSHFxFailure
	}
	return &readHandle{File: f, metrics: h.metrics}, nil
}

// readHandle counts the bytes read through it.
type readHandle struct {
	*os.File
	metrics *metrics.Metrics
}

func (r *readHandle) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.File.ReadAt(p, off)
	r.metrics.Bytes("sftp", "down", int64(n))
	return n, err
}

// Filewrite opens the shared file for writing (put, put -a).
func (h *fsHandler) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return h.openWrite(r)
}

// OpenFile opens the shared file for reading and writing.
func (h *fsHandler) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return h.openWrite(r)
}

func (h *fsHandler) openWrite(r *sftp.Request) (*writeHandle, error) {
	v, err := h.target(r.Filepath)
	if err != nil {
		return nil, err
	}
	if !v.writable {
		return nil, sftp.ErrSSHFxPermissionDenied
	}
	flags := r.Pflags()
	if flags.Excl {
		return nil, sftp.ErrSSHFxFailure // the file always exists
	}
	token := newToken()
	if err := h.requests.BeginInPlaceUpload(h.ctx, h.id, token, h.lease); err != nil {
		if errors.Is(err, store.ErrUploadBusy) {
			return nil, errBusy
		}
		if errors.Is(err, store.ErrBadTransition) {
			return nil, sftp.ErrSSHFxPermissionDenied
		}
		h.logger.Error("sftp: take upload lease", "err", err)
		return nil, sftp.ErrSSHFxFailure
	}
	wh, err := h.openWriteFile(flags.Trunc)
	if err != nil {
		h.release(token)
		h.logger.Error("sftp: open for writing", "err", err)
		return nil, sftp.ErrSSHFxFailure
	}
	wh.h, wh.token = h, token
	wh.stop = make(chan struct{})
	h.writers.Add(1)
	go wh.renew()
	h.logger.Info("sftp: upload handle opened", "truncate", flags.Trunc, "offset", wh.contig)
	return wh, nil
}

func (h *fsHandler) openWriteFile(trunc bool) (*writeHandle, error) {
	if _, err := h.data.EnsureRequest(h.id); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(h.data.Path(h.id, datadir.Upload), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if trunc {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &writeHandle{f: f, contig: st.Size(), pending: map[int64]int64{}}, nil
}

func (h *fsHandler) release(token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), 10*time.Second) // bounded cleanup
	defer cancel()
	if err := h.requests.AbortUpload(ctx, h.id, token); err != nil {
		h.logger.Error("sftp: release upload lease", "err", err)
	}
}

// Filecmd allows one thing: truncating the shared file while draft
// (setstat/fsetstat of the size alone, as put -a does after an error).
func (h *fsHandler) Filecmd(r *sftp.Request) error {
	if r.Method != "Setstat" {
		return sftp.ErrSSHFxPermissionDenied
	}
	v, err := h.target(r.Filepath)
	if err != nil {
		return err
	}
	flags := r.AttrFlags()
	if !v.writable || !flags.Size || flags.UidGid || flags.Permissions || flags.Acmodtime {
		return sftp.ErrSSHFxPermissionDenied
	}
	size := int64(r.Attributes().Size)
	// A truncation is a write: it needs the upload lease, unless this
	// session's own write handle holds it (fsetstat on an open handle).
	token := newToken()
	err = h.requests.BeginInPlaceUpload(h.ctx, h.id, token, h.lease)
	switch {
	case errors.Is(err, store.ErrUploadBusy):
		// Held by a write handle: allowed only if the file is open here.
		if !h.ownsWriter() {
			return errBusy
		}
		token = ""
	case err != nil:
		h.logger.Error("sftp: take upload lease", "err", err)
		return sftp.ErrSSHFxFailure
	}
	if token != "" {
		defer h.release(token)
	}
	if err := os.Truncate(h.data.Path(h.id, datadir.Upload), size); err != nil {
		h.logger.Error("sftp: truncate", "err", err)
		return sftp.ErrSSHFxFailure
	}
	return nil
}

// ownsWriter reports whether this session holds an open write handle.
func (h *fsHandler) ownsWriter() bool { return h.writers.Load() > 0 }

// Filelist lists the root (the one visible file) and stats it.
func (h *fsHandler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	v, err := h.current()
	if err != nil {
		return nil, err
	}
	p := cleanPath(r.Filepath)
	switch r.Method {
	case "List":
		if p != "/" {
			return nil, sftp.ErrSSHFxPermissionDenied
		}
		if v.name == "" {
			return listerAt(nil), nil
		}
		fi, err := h.stat(v)
		if errors.Is(err, fs.ErrNotExist) {
			return listerAt(nil), nil
		}
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	case "Stat":
		if p == "/" {
			return listerAt{dirInfo{}}, nil
		}
		if v.name == "" || p != "/"+v.name {
			return nil, sftp.ErrSSHFxPermissionDenied
		}
		fi, err := h.stat(v)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, sftp.ErrSSHFxNoSuchFile
		}
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxPermissionDenied
}

// Lstat is Stat: there are no links.
func (h *fsHandler) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	r.Method = "Stat"
	return h.Filelist(r)
}

// RealPath resolves every path under the root "/".
func (h *fsHandler) RealPath(p string) (string, error) { return cleanPath(p), nil }

// Readlink: there are no links.
func (h *fsHandler) Readlink(string) (string, error) { return "", sftp.ErrSSHFxPermissionDenied }

// PosixRename is refused like every rename.
func (h *fsHandler) PosixRename(*sftp.Request) error { return sftp.ErrSSHFxPermissionDenied }

func (h *fsHandler) stat(v view) (os.FileInfo, error) {
	st, err := os.Stat(h.data.Path(h.id, v.artifact))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.logger.Error("sftp: stat", "err", err)
			return nil, sftp.ErrSSHFxFailure
		}
		return nil, err
	}
	return fileInfo{name: v.name, size: st.Size(), mtime: st.ModTime(), writable: v.writable}, nil
}

// fileInfo shows the visible file as the platform does:
// -rw-rw-rw- 0 0 <size> <date> <name> (read-only: -r--r--r--).
type fileInfo struct {
	name     string
	size     int64
	mtime    time.Time
	writable bool
}

func (f fileInfo) Name() string { return f.name }
func (f fileInfo) Size() int64  { return f.size }
func (f fileInfo) Mode() fs.FileMode {
	if f.writable {
		return 0o666
	}
	return 0o444
}
func (f fileInfo) ModTime() time.Time { return f.mtime }
func (f fileInfo) IsDir() bool        { return false }
func (f fileInfo) Sys() any           { return nil }

type dirInfo struct{}

func (dirInfo) Name() string       { return "/" }
func (dirInfo) Size() int64        { return 0 }
func (dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (dirInfo) ModTime() time.Time { return time.Time{} }
func (dirInfo) IsDir() bool        { return true }
func (dirInfo) Sys() any           { return nil }

type listerAt []os.FileInfo

func (l listerAt) ListAt(ls []os.FileInfo, offset int64) (int, error) {
	if offset >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(ls, l[offset:])
	if n < len(ls) {
		return n, io.EOF
	}
	return n, nil
}

// writeHandle is an open shared file. It keeps the upload lease while open
// and tracks how far the file is contiguous from its start: when the
// connection drops with writes still in flight (answered out of order), the
// file is cut back to the last contiguous byte, so put -a resumes correctly.
type writeHandle struct {
	f     *os.File
	h     *fsHandler
	token string
	stop  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	contig  int64           // bytes [0, contig) are known to be written
	pending map[int64]int64 // written ranges beyond contig: start -> end
	broken  error
}

func (w *writeHandle) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	w.h.metrics.Bytes("sftp", "up", int64(n))
	if n > 0 {
		w.mu.Lock()
		w.mark(off, off+int64(n))
		w.mu.Unlock()
	}
	if err != nil {
		w.h.logger.Error("sftp: write", "err", err)
		return n, sftp.ErrSSHFxFailure
	}
	return n, nil
}

// mark records [start, end) as written and advances contig.
func (w *writeHandle) mark(start, end int64) {
	if start > w.contig {
		if e, ok := w.pending[start]; !ok || e < end {
			w.pending[start] = end
		}
		return
	}
	if end > w.contig {
		w.contig = end
	}
	for {
		advanced := false
		for s, e := range w.pending {
			if s <= w.contig {
				if e > w.contig {
					w.contig = e
				}
				delete(w.pending, s)
				advanced = true
			}
		}
		if !advanced {
			return
		}
	}
}

func (w *writeHandle) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(p, off) }

// TransferError is called by pkg/sftp when the connection ends with the
// handle still open.
func (w *writeHandle) TransferError(err error) {
	w.mu.Lock()
	w.broken = err
	w.mu.Unlock()
}

func (w *writeHandle) renew() {
	t := time.NewTicker(w.h.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if err := w.h.requests.RenewUpload(w.h.ctx, w.h.id, w.token, w.h.lease); err != nil && w.h.ctx.Err() == nil {
				w.h.logger.Warn("sftp: renew upload lease", "err", err)
			}
		}
	}
}

// Close cuts the file back to its contiguous prefix after a dropped
// connection, closes it and frees the request for the next writer.
func (w *writeHandle) Close() error {
	var err error
	w.once.Do(func() {
		close(w.stop)
		defer w.h.writers.Add(-1)
		w.mu.Lock()
		broken, contig, gaps := w.broken, w.contig, len(w.pending)
		w.mu.Unlock()
		if broken != nil {
			if st, serr := w.f.Stat(); serr == nil && st.Size() > contig {
				w.h.logger.Warn("sftp: connection lost during upload; cutting back to the last contiguous byte",
					"size", st.Size(), "contiguous", contig, "ranges_beyond", gaps)
				if terr := w.f.Truncate(contig); terr != nil {
					w.h.logger.Error("sftp: truncate after lost connection", "err", terr)
				}
			}
		}
		size := int64(-1)
		if st, serr := w.f.Stat(); serr == nil {
			size = st.Size()
		}
		err = w.f.Close()
		w.h.release(w.token)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.h.ctx), 10*time.Second) // bounded cleanup
		defer cancel()
		msg := fmt.Sprintf("SFTP upload handle closed; the shared file holds %d bytes.", size)
		if broken != nil {
			msg = fmt.Sprintf("SFTP connection lost during an upload; the shared file holds %d bytes (resume with put -a).", size)
		}
		if aerr := w.h.requests.AddEvent(ctx, w.h.id, "info", msg); aerr != nil {
			w.h.logger.Warn("sftp: request log", "err", aerr)
		}
	})
	return err
}

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
