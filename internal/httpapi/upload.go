package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// handleUpload streams the raw body (POST --data-binary, PUT -T) to a
// temporary file in the request's folder, hashing it on the way, and renames
// it into place only once the body is complete and fsynced. Memory stays
// constant whatever the size. key and request come from the query string:
// the body is the dump, whatever its Content-Type says. A new upload takes
// the request over from any upload still running (HTTP or SFTP, in this
// process or another): that one is stopped and keeps nothing.
func handleUpload(logger *slog.Logger, requests RequestStore, opts Options) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		req, fails, err := authenticate(r.Context(), requests, queryParams(r))
		if err != nil || fails != nil {
			return reply{fails: fails, err: err}
		}
		if req.State != store.StateDraft {
			return reply{fails: []failure{stateFailure(&store.StateError{Current: req.State, Want: []store.State{store.StateDraft}})}}
		}
		if r.ContentLength == 0 {
			return reply{fails: []failure{uploadEmpty()}}
		}
		if opts.MaxUploadBytes > 0 && r.ContentLength > opts.MaxUploadBytes {
			return reply{fails: []failure{uploadTooLarge(opts.MaxUploadBytes)}}
		}
		token := newKey()
		replaced, err := requests.TakeUpload(r.Context(), req.ID, token, opts.UploadLease, false)
		if err != nil {
			return transitionReply(opts, req, err)
		}
		u := &upload{logger: logger.With("request_id", req.ID), requests: requests, opts: opts, id: req.ID, token: token}
		if replaced != "" {
			u.logger.Info("this upload takes the request over from another one")
			opts.Uploads.Stop(req.ID, replaced) // at once when it is ours; others hear of it through the store
		}
		got, fails, err := u.receive(w, r)
		if err != nil || fails != nil {
			u.abort()
			return reply{fails: fails, err: err, stopped: u.stopped}
		}
		return reply{req: opts.record(got)}
	}
}

// errTakenOver: a newer upload of the request took over.
var errTakenOver = errors.New("a newer upload of this request took over")

// Uploads are the HTTP uploads running in this process, so that a newer
// writer of the same request stops one at once (Stop). The zero value is
// not usable; NewUploads makes one.
type Uploads struct {
	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // by lease token
}

// NewUploads returns an empty set of running uploads.
func NewUploads() *Uploads { return &Uploads{running: map[string]context.CancelCauseFunc{}} }

// Stop ends the upload of request id holding token, if it runs in this
// process, because a newer writer took the request over
// (store.UploadChannel): it answers UPLOAD:INTERRUPTED and keeps nothing.
// It reports whether such an upload ran here.
func (u *Uploads) Stop(id int64, token string) bool {
	u.mu.Lock()
	cancel := u.running[token]
	u.mu.Unlock()
	if cancel == nil {
		return false
	}
	cancel(errTakenOver)
	return true
}

func (u *Uploads) add(token string, cancel context.CancelCauseFunc) {
	u.mu.Lock()
	u.running[token] = cancel
	u.mu.Unlock()
}

func (u *Uploads) remove(token string) {
	u.mu.Lock()
	delete(u.running, token)
	u.mu.Unlock()
}

type upload struct {
	logger   *slog.Logger
	requests RequestStore
	opts     Options
	id       int64
	token    string
	tmp      string
	// stopped: the server ended the upload (taken over, lease lost).
	stopped bool
}

func uploadEmpty() failure {
	return failure{Reason: reasonUploadEmpty, Message: "The upload is empty: send the dump as the request body"}
}

func uploadTooLarge(limit int64) failure {
	return failure{Reason: reasonUploadTooLarge, Message: fmt.Sprintf("The upload exceeds the limit of %s", humanSize(limit))}
}

func (u *upload) receive(w http.ResponseWriter, r *http.Request) (store.Request, []failure, error) {
	dir, err := u.opts.Data.EnsureRequest(u.id)
	if err != nil {
		return store.Request{}, nil, err
	}
	f, err := os.CreateTemp(dir, datadir.PartPattern)
	if err != nil {
		return store.Request{}, storageFailure(err), storageErr(err)
	}
	u.tmp = f.Name()
	defer f.Close() // after a successful Close, a harmless no-op
	// A lock on the part file, held until it is renamed into place, tells a
	// start-up sweep (of any process sharing the data directory) that it is
	// alive.
	hold, err := os.Open(u.tmp)
	if err == nil {
		defer hold.Close()
		err = datadir.HoldOpen(hold)
	}
	if err != nil {
		return store.Request{}, nil, err
	}

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	u.opts.Uploads.add(u.token, cancel)
	defer u.opts.Uploads.remove(u.token)
	go u.renewLease(ctx, cancel)
	// A read of a stalled body does not see ctx: once ctx ends (taken over,
	// lease lost), the connection's read deadline ends the read at once.
	rc := http.NewResponseController(w)
	stopDeadline := context.AfterFunc(ctx, func() { rc.SetReadDeadline(time.Now()) })
	defer stopDeadline()

	var body io.Reader = r.Body
	if u.opts.MaxUploadBytes > 0 {
		body = http.MaxBytesReader(w, r.Body, u.opts.MaxUploadBytes)
	}
	size, sum, err := copyHashing(ctx, f, body, !u.opts.NoUploadSync)
	if err != nil {
		var mbe *http.MaxBytesError
		var we writeError
		switch {
		case errors.As(err, &mbe):
			return store.Request{}, []failure{uploadTooLarge(u.opts.MaxUploadBytes)}, nil
		case errors.As(err, &we):
			return store.Request{}, storageFailure(err), storageErr(err)
		}
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return store.Request{}, u.interrupted(r, size, err), nil
	}
	if size == 0 {
		return store.Request{}, []failure{uploadEmpty()}, nil
	}
	if !u.opts.NoUploadSync {
		if err := f.Sync(); err != nil {
			return store.Request{}, storageFailure(err), storageErr(err)
		}
	}
	if err := f.Close(); err != nil {
		return store.Request{}, storageFailure(err), storageErr(err)
	}
	// The file goes into place under the upload's lock, and only while
	// this upload still holds the lease: a writer that took over waits for
	// the lock, so it never sees this file appear after it started.
	lctx, lcancel := context.WithTimeout(ctx, u.opts.UploadLease/2)
	defer lcancel()
	lock, err := u.opts.Data.LockUpload(lctx, u.id)
	if err != nil {
		if ctx.Err() != nil || lctx.Err() != nil {
			return store.Request{}, u.interrupted(r, size, errors.Join(context.Cause(ctx), err)), nil
		}
		return store.Request{}, nil, err
	}
	defer lock.Release()
	if err := u.requests.RenewUpload(ctx, u.id, u.token, u.opts.UploadLease); err != nil {
		if errors.Is(err, store.ErrLeaseLost) {
			return store.Request{}, u.interrupted(r, size, errTakenOver), nil
		}
		return store.Request{}, nil, err
	}
	if err := os.Rename(u.tmp, u.opts.Data.Path(u.id, datadir.Upload)); err != nil {
		return store.Request{}, nil, err
	}
	u.tmp = ""
	if !u.opts.NoUploadSync {
		syncDir(dir)
	}
	digest := hex.EncodeToString(sum)
	got, err := u.requests.CompleteUpload(context.WithoutCancel(ctx), u.id, u.token, size, digest)
	if errors.Is(err, store.ErrLeaseLost) {
		return store.Request{}, u.interrupted(r, size, errTakenOver), nil
	}
	if err != nil {
		return store.Request{}, nil, err
	}
	u.logger.Info("upload complete", "bytes", size, "sha256", digest)
	u.opts.Metrics.Bytes("http", "up", size)
	if err := u.requests.AddEvent(context.WithoutCancel(ctx), u.id, "info",
		fmt.Sprintf("Upload received over HTTP: %s, sha256 %s.", humanSize(size), digest)); err != nil {
		u.logger.Warn("request log", "err", err)
	}
	return got, nil, nil
}

// interrupted is UPLOAD:INTERRUPTED for an upload stopped after size bytes
// by err: the client's disconnect, a short body, a lost lease or a newer
// upload that took over.
func (u *upload) interrupted(r *http.Request, size int64, err error) []failure {
	level := slog.LevelWarn
	if r.Context().Err() != nil {
		level = slog.LevelInfo // the client went away: its business
	}
	u.stopped = errors.Is(err, errTakenOver) || errors.Is(err, store.ErrLeaseLost)
	if u.stopped {
		level = slog.LevelInfo
	}
	u.logger.Log(r.Context(), level, "upload interrupted", "bytes", size, "err", err)
	msg := fmt.Sprintf("The upload was interrupted after %d bytes; nothing was kept, send it again", size)
	switch {
	case errors.Is(err, errTakenOver):
		msg = fmt.Sprintf("A newer upload of this request took over after %d bytes of this one; nothing of this one was kept", size)
	case errors.Is(err, store.ErrLeaseLost):
		msg = "The upload lost its lock (it stalled for too long); send it again"
	}
	return []failure{{Reason: reasonUploadInterrupt, Message: msg}}
}

// renewLease keeps the upload lease while the body streams in and cancels
// the upload if the lease is lost (taken over while this process missed
// the notification, or the request moved on).
func (u *upload) renewLease(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(u.opts.UploadLease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := u.requests.RenewUpload(ctx, u.id, u.token, u.opts.UploadLease)
			if errors.Is(err, store.ErrLeaseLost) {
				cancel(err)
				return
			}
			if err != nil && ctx.Err() == nil {
				u.logger.Warn("renew upload lease", "err", err)
			}
		}
	}
}

// abort removes the partial file and frees the request; an earlier complete
// upload stays as it was.
func (u *upload) abort() {
	if u.tmp != "" {
		if err := os.Remove(u.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.logger.Error("remove partial upload", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounded cleanup
	defer cancel()
	if err := u.requests.AbortUpload(ctx, u.id, u.token); err != nil {
		u.logger.Error("release upload lease", "err", err)
	}
}

// storageFailure: a full disk is the client's to know about; other storage
// errors are internal (storageErr) and answered SERVER:ERROR.
func storageFailure(err error) []failure {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return []failure{{Reason: reasonUploadNoSpace,
			Message: "The server has no space left for this upload; earlier data is intact, retry later"}}
	}
	return nil
}

func storageErr(err error) error {
	if storageFailure(err) != nil {
		return nil
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// writeError marks an error of the destination file, not of the client.
type writeError struct{ err error }

func (e writeError) Error() string { return "write: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

const (
	copyBufSize = 1 << 20
	copyBuffers = 4
	flushEvery  = 64 << 20
)

// copyHashing copies src to dst and returns the byte count and sha256. The
// hash runs in its own goroutine on the buffers already written, so hashing
// overlaps reading and writing; dirty pages are pushed to disk as the copy
// goes, so the final fsync is short and memory stays flat.
func copyHashing(ctx context.Context, dst *os.File, src io.Reader, writeback bool) (int64, []byte, error) {
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
	var n, flushed int64
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
				err = writeError{werr}
			}
			n += int64(k)
			toHash <- buf[:k]
		} else {
			free <- buf
		}
		if writeback && n-flushed >= flushEvery {
			startWriteback(dst, flushed, n-flushed)
			flushed = n
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
