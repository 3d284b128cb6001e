package sftpd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"github.com/pkg/sftp"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// errTakenOver: a newer writer of the request took the upload over.
var errTakenOver = errors.New("a newer upload of this request took over")

// writeHandle is an open shared file: an upload over SFTP. It holds the
// upload lease and the upload's lock while open, and tracks how far the
// file is contiguous from its start; a goroutine hashes that prefix as it
// grows. A clean close records the upload (size and sha256) with the
// lease, so process needs nothing more. When the connection drops with
// writes in flight (answered out of order), the file is cut back to the
// last contiguous byte and left incomplete, so put -a resumes correctly.
// When a newer writer takes the upload over, the handle is revoked:
// nothing it writes afterwards lands, and its connection is closed.
type writeHandle struct {
	f      *os.File
	path   string // the staged file
	h      *fsHandler
	token  string
	lock   *files.Lock
	stop   chan struct{}
	once   sync.Once
	hasher *prefixHasher

	// Every write and truncation holds wmu shared; revoke and Close take
	// it exclusive, so once either has begun nothing else reaches the file.
	wmu  sync.RWMutex
	done bool // revoked or closed (under wmu)
	// revoked: taken over (under wmu).
	revoked bool

	mu      sync.Mutex
	contig  int64           // bytes [0, contig) are known to be written
	pending map[int64]int64 // written ranges beyond contig: start -> end
	broken  error
	// refused: a write failed or was refused (over the size limit), so
	// the file is not what the client meant to send: a close records
	// nothing.
	refused error
}

func (w *writeHandle) WriteAt(p []byte, off int64) (int, error) {
	if max := w.h.srv.cfg.MaxUploadBytes; max > 0 && off+int64(len(p)) > max {
		w.refuse(errTooLarge, func() { w.h.tooLarge(off + int64(len(p))) })
		return 0, errTooLarge
	}
	w.wmu.RLock()
	defer w.wmu.RUnlock()
	if w.done {
		return 0, errTakenOver
	}
	w.mu.Lock()
	if off < w.contig {
		w.hasher.invalidate() // a rewrite of what may be hashed already
	}
	w.mu.Unlock()
	n, err := w.f.WriteAt(p, off)
	w.h.metrics.Bytes("sftp", "up", int64(n))
	if n > 0 {
		w.mu.Lock()
		w.mark(off, off+int64(n))
		w.hasher.advance(w.contig)
		w.mu.Unlock()
	}
	if err != nil {
		w.h.logger.Error("sftp: write", "err", err)
		w.refuse(err, nil)
		return n, sftp.ErrSSHFxFailure
	}
	return n, nil
}

// refuse marks the handle as holding a failed transfer; first runs for
// the first refusal only (one word to the user, not one per packet).
func (w *writeHandle) refuse(err error, first func()) {
	w.mu.Lock()
	was := w.refused
	if was == nil {
		w.refused = err
	}
	w.mu.Unlock()
	if was == nil && first != nil {
		first()
	}
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

// truncate sets the file's size (fsetstat through this session).
func (w *writeHandle) truncate(size int64) error {
	w.wmu.RLock()
	defer w.wmu.RUnlock()
	if w.done {
		return errTakenOver
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hasher.invalidate()
	if err := w.f.Truncate(size); err != nil {
		w.h.logger.Error("sftp: truncate", "err", err)
		return sftp.ErrSSHFxFailure
	}
	for s, e := range w.pending {
		switch {
		case s >= size:
			delete(w.pending, s)
		case e > size:
			w.pending[s] = size
		}
	}
	w.contig = min(w.contig, size)
	return nil
}

func (w *writeHandle) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(p, off) }

// TransferError is called by pkg/sftp when the connection ends with the
// handle still open.
func (w *writeHandle) TransferError(err error) {
	w.mu.Lock()
	w.broken = err
	w.mu.Unlock()
}

// contiguous is how far the file is known to be written from its start.
func (w *writeHandle) contiguous() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.contig
}

// renew keeps the lease until the handle stops; a lease lost (taken over
// while this process missed the notification, or the request moved on)
// revokes the handle.
func (w *writeHandle) renew() {
	ctx, cancel := context.WithCancel(w.h.ctx)
	defer cancel()
	go func() {
		<-w.stop
		cancel()
	}()
	store.KeepLease(ctx, w.h.lease/3,
		func(ctx context.Context) error { return w.h.requests.RenewUpload(ctx, w.h.id, w.token, w.h.lease) },
		func(error) { w.revoke() },
		func(err error) { w.h.logger.Warn("sftp: renew upload lease", "err", err) })
}

// cutBack truncates the file to its contiguous prefix (the caller holds
// wmu exclusive).
func (w *writeHandle) cutBack(why string) int64 {
	w.mu.Lock()
	contig, gaps := w.contig, len(w.pending)
	w.mu.Unlock()
	if st, err := w.f.Stat(); err == nil && st.Size() > contig {
		w.h.logger.Warn("sftp: "+why+"; cutting back to the last contiguous byte",
			"size", st.Size(), "contiguous", contig, "ranges_beyond", gaps)
		if err := w.f.Truncate(contig); err != nil {
			w.h.logger.Error("sftp: truncate to the contiguous prefix", "err", err)
		}
	}
	return contig
}

// revoke stops a handle whose upload a newer writer took over: later
// writes are refused, the file is cut back to its contiguous prefix (the
// newcomer resumes from there), the upload's lock goes to the newcomer, and
// the connection is closed with a word to the user. The newcomer holds the
// lease already.
func (w *writeHandle) revoke() {
	w.wmu.Lock()
	if w.done {
		w.wmu.Unlock()
		return
	}
	w.done, w.revoked = true, true
	w.hasher.stop()
	w.cutBack("upload taken over")
	w.lock.Release()
	w.wmu.Unlock()
	w.h.logger.Info("sftp: a newer upload took this one over; closing its connection")
	go func() { // a client that stopped reading must not hold up the newcomer
		w.h.tellFunc(errTakenOver.Error() + "; this connection is closed")
		w.h.hangUpFunc()
	}()
}

// Close ends the handle. After a clean transfer it records the upload
// (size and sha256) and frees the request; after a dropped connection it
// cuts the file back to its contiguous prefix and leaves the upload
// incomplete until a clean close (put -a).
func (w *writeHandle) Close() error {
	var err error
	w.once.Do(func() {
		// The lease is kept until the upload is stored (into object
		// storage, that takes a while).
		defer close(w.stop)
		defer w.h.closed(w)
		w.wmu.Lock()
		defer w.wmu.Unlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.h.ctx), 10*time.Second) // bounded cleanup
		defer cancel()
		if w.revoked {
			err = w.f.Close()
			w.event(ctx, "SFTP upload stopped: a newer upload of this request took over.")
			return
		}
		w.done = true
		defer w.lock.Release()
		w.mu.Lock()
		broken, refused := w.broken, w.refused
		w.mu.Unlock()
		if refused != nil && broken == nil {
			w.hasher.stop()
			err = w.f.Close()
			w.h.release(w.token)
			w.event(ctx, "SFTP upload refused ("+refused.Error()+"); nothing was recorded, upload again.")
			return
		}
		if broken != nil {
			w.hasher.stop()
			size := w.cutBack("connection lost during upload")
			err = w.f.Close()
			w.h.release(w.token)
			w.event(ctx, fmt.Sprintf("SFTP connection lost during an upload; the shared file holds %d bytes (resume with put -a).", size))
			return
		}
		err = w.complete(ctx)
	})
	return err
}

// complete records a cleanly closed upload (wmu held exclusive): the
// staged file goes into the store as a file of its own, and the request
// points to it only while this handle still holds the lease.
func (w *writeHandle) complete(ctx context.Context) error {
	st, err := w.f.Stat()
	if err != nil {
		w.f.Close()
		w.hasher.stop()
		w.h.release(w.token)
		w.h.logger.Error("sftp: stat the upload", "err", err)
		return sftp.ErrSSHFxFailure
	}
	size := st.Size()
	if size == 0 {
		w.f.Close()
		w.hasher.stop()
		w.h.release(w.token)
		w.event(ctx, "SFTP upload handle closed; the shared file is empty.")
		return nil
	}
	sum, err := w.hasher.finish(size)
	if err == nil && w.h.srv.cfg.UploadFsync {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.h.release(w.token)
		w.h.logger.Error("sftp: hash the upload", "err", err)
		return sftp.ErrSSHFxFailure
	}
	digest := hex.EncodeToString(sum)
	name := files.NewUploadName()
	if _, err := w.h.files.CommitFile(ctx, w.h.id, name, w.path, &files.Received{Size: size, SHA256: digest}); err != nil {
		w.h.release(w.token)
		w.h.logger.Error("sftp: store the upload", "err", err)
		return sftp.ErrSSHFxFailure
	}
	_, replaced, err := w.h.requests.CompleteUpload(ctx, w.h.id, w.token, store.Upload{Name: string(name), Size: size, SHA256: digest})
	if err != nil {
		w.removeFile(ctx, name)
		if errors.Is(err, store.ErrLeaseLost) {
			w.h.logger.Info("sftp: upload closed after a newer one took over; not recorded")
			return errTakenOver
		}
		w.h.release(w.token)
		w.h.logger.Error("sftp: record the upload", "err", err)
		return sftp.ErrSSHFxFailure
	}
	if replaced != "" {
		w.removeFile(ctx, files.Name(replaced))
	}
	w.h.logger.Info("sftp upload recorded", "bytes", size, "sha256", digest)
	w.event(ctx, fmt.Sprintf("Upload received over SFTP: %s, sha256 %s.", byteSize(size), digest))
	return nil
}

// removeFile removes an upload's file this handle stored or replaced (a
// start-up sweep removes what a failure here leaves).
func (w *writeHandle) removeFile(ctx context.Context, name files.Name) {
	if err := w.h.files.Remove(ctx, w.h.id, name); err != nil {
		w.h.logger.Warn("sftp: remove an upload's file", "file", name, "err", err)
	}
}

func (w *writeHandle) event(ctx context.Context, msg string) {
	if err := w.h.requests.AddEvent(ctx, w.h.id, "info", msg); err != nil {
		w.h.logger.Warn("sftp: request log", "err", err)
	}
}

// prefixHasher hashes a file's contiguous prefix in the background while
// it is written, so closing a large upload costs only its tail. A write
// that lands below the prefix (a rewrite) or a truncation makes it start
// again from zero at the end: rare, and always correct.
type prefixHasher struct {
	f    *os.File
	mu   sync.Mutex
	cond *sync.Cond
	h    hash.Hash
	done int64 // bytes [0, done) are hashed
	// avail: bytes [0, avail) are written and final unless a rewrite comes.
	avail   int64
	stale   bool // a rewrite or truncation: the background work is void
	stopped bool
	err     error
	exited  chan struct{}
}

const hashChunk = 1 << 20

func newPrefixHasher(f *os.File, avail int64) *prefixHasher {
	p := &prefixHasher{f: f, h: sha256.New(), avail: avail, exited: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	go p.run()
	return p
}

func (p *prefixHasher) run() {
	defer close(p.exited)
	buf := make([]byte, hashChunk)
	for {
		p.mu.Lock()
		for !p.stopped && !p.stale && p.done >= p.avail {
			p.cond.Wait()
		}
		if p.stopped || p.stale {
			p.mu.Unlock()
			return
		}
		start, end := p.done, min(p.avail, p.done+hashChunk)
		p.mu.Unlock()
		n, err := p.f.ReadAt(buf[:end-start], start)
		p.mu.Lock()
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == end-start) {
			p.err = err
			p.mu.Unlock()
			return
		}
		if !p.stale {
			p.h.Write(buf[:n])
			p.done += int64(n)
		}
		p.mu.Unlock()
	}
}

// advance says bytes [0, contig) are written.
func (p *prefixHasher) advance(contig int64) {
	p.mu.Lock()
	if contig > p.avail {
		p.avail = contig
		p.cond.Signal()
	}
	p.mu.Unlock()
}

// invalidate voids the background hash (a rewrite or a truncation).
func (p *prefixHasher) invalidate() {
	p.mu.Lock()
	p.stale = true
	p.cond.Signal()
	p.mu.Unlock()
}

// stop ends the background hashing and waits for it.
func (p *prefixHasher) stop() {
	p.mu.Lock()
	p.stopped = true
	p.cond.Signal()
	p.mu.Unlock()
	<-p.exited
}

// finish returns the sha256 of the file's first size bytes, hashing what
// the background work has not (everything after a rewrite). No write may
// run meanwhile.
func (p *prefixHasher) finish(size int64) ([]byte, error) {
	p.stop()
	if p.stale || p.done > size {
		p.h.Reset()
		p.done = 0
	}
	if p.err != nil && !p.stale {
		return nil, p.err
	}
	if _, err := io.Copy(p.h, io.NewSectionReader(p.f, p.done, size-p.done)); err != nil {
		return nil, err
	}
	return p.h.Sum(nil), nil
}

// byteSize formats a size for people: "1.50 GiB".
func byteSize(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	s, i := float64(n), 0
	for s >= 1024 && i < len(units)-1 {
		s /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.2f %s", s, units[i])
}
