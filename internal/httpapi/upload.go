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
	"syscall"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// handleUpload streams the raw body (POST --data-binary, PUT -T) to a
// temporary file in the request's folder, hashing it on the way, and renames
// it into place only once the body is complete and fsynced. Memory stays
// constant whatever the size. key and request come from the query string:
// the body is the dump, whatever its Content-Type says.
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
		if err := requests.BeginUpload(r.Context(), req.ID, token, opts.UploadLease); err != nil {
			return transitionReply(opts, req, err)
		}
		u := upload{logger: logger.With("request_id", req.ID), requests: requests, opts: opts, id: req.ID, token: token}
		got, fails, err := u.receive(w, r)
		if err != nil || fails != nil {
			u.abort()
			return reply{fails: fails, err: err}
		}
		return reply{req: opts.record(got)}
	}
}

type upload struct {
	logger   *slog.Logger
	requests RequestStore
	opts     Options
	id       int64
	token    string
	tmp      string
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
	f, err := os.CreateTemp(dir, ".upload-*.part")
	if err != nil {
		return store.Request{}, storageFailure(err), storageErr(err)
	}
	u.tmp = f.Name()
	defer f.Close() // after a successful Close, a harmless no-op

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	go u.renewLease(ctx, cancel)

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
		level := slog.LevelWarn
		if r.Context().Err() != nil {
			level = slog.LevelInfo // the client went away: its business
		}
		u.logger.Log(r.Context(), level, "upload interrupted", "bytes", size, "err", err)
		return store.Request{}, []failure{{Reason: reasonUploadInterrupt,
			Message: fmt.Sprintf("The upload was interrupted after %d bytes; nothing was kept, send it again", size)}}, nil
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
		return store.Request{}, []failure{{Reason: reasonUploadInterrupt,
			Message: "The upload lost its lock (it stalled for too long); send it again"}}, nil
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

// renewLease keeps the upload lease while the body streams in and cancels
// the upload if the lease is lost.
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

// recordSFTPUpload records the shared file written over SFTP as the
// request's upload: it takes the upload lease (refused while an SFTP write
// handle is open), hashes the file and stores its size and sha256. An empty
// or missing file is UPLOAD:MISSING.
func recordSFTPUpload(ctx context.Context, logger *slog.Logger, requests RequestStore, opts Options, id int64) ([]failure, error) {
	missing := []failure{{Reason: reasonUploadMissing,
		Message: "No complete upload: upload the dump (upload or SFTP) before calling process"}}
	path := opts.Data.Path(id, datadir.Upload)
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		return missing, nil
	}
	token := newKey()
	if err := requests.BeginUpload(ctx, id, token, opts.UploadLease); err != nil {
		var se *store.StateError
		switch {
		case errors.Is(err, store.ErrUploadBusy):
			return []failure{uploadInProgress()}, nil
		case errors.As(err, &se):
			return []failure{stateFailure(se)}, nil
		}
		return nil, err
	}
	u := upload{logger: logger.With("request_id", id), requests: requests, opts: opts, id: id, token: token}
	f, err := os.Open(path)
	if err != nil {
		u.abort()
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		u.abort()
		return nil, err
	}
	if size == 0 {
		u.abort()
		return missing, nil
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if _, err := requests.CompleteUpload(ctx, id, token, size, digest); err != nil {
		u.abort()
		if errors.Is(err, store.ErrLeaseLost) {
			return []failure{uploadInProgress()}, nil
		}
		return nil, err
	}
	logger.Info("sftp upload recorded", "request_id", id, "bytes", size, "sha256", digest)
	if err := requests.AddEvent(ctx, id, "info", fmt.Sprintf("Upload received over SFTP: %s, sha256 %s.", humanSize(size), digest)); err != nil {
		logger.Warn("request log", "err", err)
	}
	return nil, nil
}
