package sftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"time"

	"github.com/pkg/sftp"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// errBusy: the writer this one took over has not stopped in time (it is
// still finishing, in this process or another).
var errBusy = errors.New("another upload of this request is still finishing; retry in a minute")

// errTooLarge: a write or truncation past UPGRADE_MAX_UPLOAD_BYTES.
var errTooLarge = errors.New("the upload exceeds the server's size limit (UPGRADE_MAX_UPLOAD_BYTES)")

// errSessionWriter: this session has the file open for writing already.
var errSessionWriter = errors.New("this session already has the file open for writing; one writer at a time")

// fsHandler is one session's view of its request: pkg/sftp's Fileread,
// Filewrite, OpenFile, Filecmd and Filelist, all answering "permission
// denied" for anything but the one visible file.
type fsHandler struct {
	ctx      context.Context
	logger   *slog.Logger
	requests RequestStore
	srv      *Server
	files    FileStore
	lease    time.Duration
	id       int64
	metrics  *metrics.Metrics
	// tellFunc writes a line the user's client shows (the session's stderr).
	tellFunc func(msg string)
	// hangUpFunc closes the session's SSH connection.
	hangUpFunc func()

	mu     sync.Mutex
	writer *writeHandle // this session's open write handle, if any
}

// view is what the session may see and do right now.
type view struct {
	name string // the one visible file, "" for none
	// file is the request's file shown; upload: it is the upload, which
	// while draft is the staged file when this host has one.
	file     files.Name
	upload   bool
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
	var upload files.Name
	if r.UploadName != nil && !files.Name(*r.UploadName).IsSet() {
		upload = files.Name(*r.UploadName) // a folder (Odoo's client's rsync upload) shows no file
	}
	switch r.State {
	case store.StateDraft:
		return view{name: name, file: upload, upload: true, writable: true, req: r}, nil
	case store.StateQueued, store.StateProcessing, store.StateTesting:
		return view{name: name, file: upload, upload: true, req: r}, nil
	case store.StateDone, store.StateDelivered:
		if r.Output == store.OutputDirectory {
			return view{req: r}, nil // a folder: Odoo's client downloads it with rsync
		}
		return view{name: "upgraded_" + name, file: files.UpgradedArchive, req: r}, nil
	}
	return view{req: r}, nil
}

// staged is the path of this host's staged upload of the request.
func (h *fsHandler) staged() (string, error) { return h.files.StagePath(h.id, files.Upload) }

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

// Fileread opens the visible file for reading: while draft, the staged
// upload when this host has one, else the stored file.
func (h *fsHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	v, err := h.target(r.Filepath)
	if err != nil {
		return nil, err
	}
	if v.writable {
		if p, err := h.staged(); err == nil {
			if f, err := os.Open(p); err == nil {
				return &readHandle{r: f, c: f, metrics: h.metrics}, nil
			}
		}
	}
	if v.file == "" {
		return nil, sftp.ErrSSHFxNoSuchFile
	}
	o, err := h.files.Open(h.ctx, h.id, v.file)
	if errors.Is(err, files.ErrNotExist) {
		return nil, sftp.ErrSSHFxNoSuchFile
	}
	if err != nil {
		h.logger.Error("sftp: open for reading", "err", err)
		return nil, sftp.ErrSSHFxFailure
	}
	return &readHandle{r: o, c: o, metrics: h.metrics}, nil
}

// readHandle counts the bytes read through it.
type readHandle struct {
	r       io.ReaderAt
	c       io.Closer
	metrics *metrics.Metrics
}

func (r *readHandle) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(p, off)
	r.metrics.Bytes("sftp", "down", int64(n))
	return n, err
}

// Close is called by pkg/sftp when the handle closes.
func (r *readHandle) Close() error { return r.c.Close() }

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
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writer != nil {
		return nil, errSessionWriter
	}
	token, lock, err := h.takeUpload()
	if err != nil {
		return nil, err
	}
	wh, err := h.openWriteFile(v, flags.Trunc)
	if err != nil {
		lock.Release()
		h.release(token)
		h.logger.Error("sftp: open for writing", "err", err)
		return nil, sftp.ErrSSHFxFailure
	}
	wh.h, wh.token, wh.lock = h, token, lock
	wh.stop = make(chan struct{})
	wh.hasher = newPrefixHasher(wh.f, wh.contig)
	h.writer = wh
	h.srv.register(wh)
	go wh.renew()
	h.logger.Info("sftp: upload handle opened", "truncate", flags.Trunc, "offset", wh.contig)
	return wh, nil
}

// takeUpload takes the request's upload over for a new writer of this
// session: the lease (whoever held it), then the upload's lock once the
// writer it replaced, here or in another process, has stopped.
func (h *fsHandler) takeUpload() (string, *files.Lock, error) {
	token := token.Hex(16)
	replaced, err := h.requests.TakeUpload(h.ctx, h.id, token, h.lease, true)
	if errors.Is(err, store.ErrBadTransition) {
		return "", nil, sftp.ErrSSHFxPermissionDenied
	}
	if err != nil {
		h.logger.Error("sftp: take the upload lease", "err", err)
		return "", nil, sftp.ErrSSHFxFailure
	}
	if replaced != "" {
		h.logger.Info("sftp: this session takes the upload over from another writer")
		h.srv.StopUpload(h.id, replaced) // at once when it is ours; others hear of it through the store
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.lease/2)
	defer cancel()
	lock, err := h.files.LockStaging(ctx, h.id)
	if err != nil {
		h.release(token)
		if ctx.Err() != nil {
			h.logger.Warn("sftp: the replaced writer did not stop in time", "err", err)
			h.tellFunc(errBusy.Error())
			return "", nil, errBusy
		}
		h.logger.Error("sftp: lock the upload", "err", err)
		return "", nil, sftp.ErrSSHFxFailure
	}
	// A newer writer may have taken over while this one waited (its word
	// came before this handle could hear it).
	if err := h.requests.RenewUpload(h.ctx, h.id, token, h.lease); err != nil {
		lock.Release()
		if errors.Is(err, store.ErrLeaseLost) {
			return "", nil, errTakenOver
		}
		h.release(token)
		h.logger.Error("sftp: renew the upload lease", "err", err)
		return "", nil, sftp.ErrSSHFxFailure
	}
	return token, lock, nil
}

func (h *fsHandler) openWriteFile(v view, trunc bool) (*writeHandle, error) {
	p, err := h.stagedFor(v, trunc)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
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
	return &writeHandle{f: f, path: p, contig: st.Size(), pending: map[int64]int64{}}, nil
}

// stagedFor returns the staged upload's path for a writer (the upload's
// lock held): when this host has none yet and the request has a complete
// upload, a writer that does not truncate (put -a) appends to that one, so
// it is copied here first.
func (h *fsHandler) stagedFor(v view, trunc bool) (string, error) {
	p, err := h.staged()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err == nil || trunc || v.file == "" || v.req.UploadCompletedAt == nil {
		return p, nil
	}
	o, err := h.files.Open(h.ctx, h.id, v.file)
	if errors.Is(err, files.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return "", err
	}
	defer o.Close()
	tmp := p + ".copy"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, o); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return p, os.Rename(tmp, p)
}

func (h *fsHandler) release(token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), 10*time.Second) // bounded cleanup
	defer cancel()
	if err := h.requests.AbortUpload(ctx, h.id, token); err != nil {
		h.logger.Error("sftp: release upload lease", "err", err)
	}
}

// closed forgets the session's write handle w.
func (h *fsHandler) closed(w *writeHandle) {
	h.mu.Lock()
	if h.writer == w {
		h.writer = nil
	}
	h.mu.Unlock()
	h.srv.unregister(w)
}

// Filecmd allows one thing: truncating the shared file while draft
// (setstat/fsetstat of the size alone, as put -a does after an error),
// within UPGRADE_MAX_UPLOAD_BYTES. A truncation is a write: through this
// session's write handle when it has one, else it takes the upload over
// like a new writer.
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
	if max := h.srv.cfg.MaxUploadBytes; max > 0 && size > max {
		h.tooLarge(size)
		return errTooLarge
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writer != nil {
		return h.writer.truncate(size)
	}
	token, lock, err := h.takeUpload()
	if err != nil {
		return err
	}
	defer h.release(token)
	defer lock.Release()
	p, err := h.stagedFor(v, false)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
			err = f.Truncate(size)
			f.Close()
		}
	}
	if err != nil {
		h.logger.Error("sftp: truncate", "err", err)
		return sftp.ErrSSHFxFailure
	}
	return nil
}

// tooLarge says on the user's terminal (OpenSSH prints a failed request's
// status code, not its message) that a write or truncation would take the
// upload past UPGRADE_MAX_UPLOAD_BYTES.
func (h *fsHandler) tooLarge(end int64) {
	max := h.srv.cfg.MaxUploadBytes
	msg := fmt.Sprintf("the upload would reach %d bytes, over this server's limit of %d bytes (%s); nothing past the limit is written",
		end, max, byteSize(max))
	h.logger.Info("sftp: upload over the limit refused", "end", end, "max_upload_bytes", max)
	h.tellFunc(msg)
}

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

// stat describes the visible file. While draft it is this host's staged
// upload, else the complete upload, else an empty file (so put -a works
// from the first byte). While a writer of this process has the upload
// open, its size is the writer's contiguous prefix: OpenSSH's put -a stats
// before it opens, and must resume where the data really ends, not past a
// hole left by writes answered out of order.
func (h *fsHandler) stat(v view) (os.FileInfo, error) {
	if v.writable {
		if p, err := h.staged(); err == nil {
			if st, err := os.Stat(p); err == nil {
				size := st.Size()
				if c, ok := h.srv.liveSize(h.id); ok && c < size {
					size = c
				}
				return fileInfo{name: v.name, size: size, mtime: st.ModTime(), writable: true}, nil
			}
		}
		if v.file == "" || v.req.UploadCompletedAt == nil {
			return fileInfo{name: v.name, mtime: v.req.CreatedAt, writable: true}, nil
		}
	}
	if v.file == "" {
		return nil, fs.ErrNotExist
	}
	info, err := h.files.Stat(h.ctx, h.id, v.file)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.logger.Error("sftp: stat", "err", err)
			return nil, sftp.ErrSSHFxFailure
		}
		return nil, err
	}
	return fileInfo{name: v.name, size: info.Size, mtime: info.ModTime, writable: v.writable}, nil
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
