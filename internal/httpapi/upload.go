package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// handleUpload streams the raw body (POST --data-binary, PUT -T) into the
// request files as a new file of its own, hashing it on the way; the
// request points to it only once the body is complete and stored. Memory
// stays constant whatever the size. key and request come from the query
// string: the body is the dump, whatever its Content-Type says. A new
// upload takes the request over from any upload still running (HTTP or
// SFTP, in this process or another): that one is stopped and keeps nothing.
func handleUpload(requests RequestStore, up uploader, rec recorder) methodFunc {
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
		if up.max > 0 && r.ContentLength > up.max {
			return reply{fails: []failure{uploadTooLarge(up.max)}}
		}
		tok := token.Hex(16)
		replaced, err := requests.TakeUpload(r.Context(), req.ID, tok, up.lease, false)
		if err != nil {
			return transitionReply(rec, req, err)
		}
		u := &upload{uploader: up, logger: up.logger.With("request_id", req.ID), id: req.ID, token: tok}
		if replaced != "" {
			u.logger.Info("this upload takes the request over from another one")
			up.uploads.Stop(req.ID, replaced) // at once when it is ours; others hear of it through the store
		}
		got, fails, err := u.receive(w, r)
		if err != nil || fails != nil {
			u.abort()
			return reply{fails: fails, err: err, stopped: u.stopped}
		}
		return reply{req: rec.record(got)}
	}
}

// uploader is what HTTP uploads need.
type uploader struct {
	logger   *slog.Logger
	requests RequestStore
	files    FileStore
	uploads  *Uploads
	max      int64
	lease    time.Duration
	metrics  *metrics.Metrics
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
	uploader
	logger *slog.Logger
	id     int64
	token  string
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
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	u.uploads.add(u.token, cancel)
	defer u.uploads.remove(u.token)
	go store.KeepLease(ctx, u.lease/3,
		func(ctx context.Context) error { return u.requests.RenewUpload(ctx, u.id, u.token, u.lease) },
		func(err error) { cancel(err) },
		func(err error) { u.logger.Warn("renew upload lease", "err", err) })
	// A read of a stalled body does not see ctx: once ctx ends (taken over,
	// lease lost), the connection's read deadline ends the read at once.
	rc := http.NewResponseController(w)
	stopDeadline := context.AfterFunc(ctx, func() { rc.SetReadDeadline(time.Now()) })
	defer stopDeadline()

	name := files.NewUploadName()
	got, err := u.files.Receive(ctx, u.id, name, r.Body, u.max)
	if err != nil {
		var we *files.WriteError
		switch {
		case errors.Is(err, files.ErrTooLarge):
			return store.Request{}, []failure{uploadTooLarge(u.max)}, nil
		case errors.As(err, &we) && files.NoSpace(err):
			return store.Request{}, []failure{{Reason: reasonUploadNoSpace,
				Message: "The server has no space left for this upload; earlier data is intact, retry later"}}, nil
		case errors.As(err, &we):
			return store.Request{}, nil, err
		}
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return store.Request{}, u.interrupted(r, got.Size, err), nil
	}
	if got.Size == 0 {
		u.removeFile(name)
		return store.Request{}, []failure{uploadEmpty()}, nil
	}
	// The request points to the new file only while this upload still
	// holds the lease: one that lost it (taken over) never replaces the
	// newer upload's file, since each upload writes a file of its own.
	done, replaced, err := u.requests.CompleteUpload(context.WithoutCancel(ctx), u.id, u.token,
		store.Upload{Name: string(name), Size: got.Size, SHA256: got.SHA256})
	if errors.Is(err, store.ErrLeaseLost) {
		u.removeFile(name)
		return store.Request{}, u.interrupted(r, got.Size, errTakenOver), nil
	}
	if err != nil {
		u.removeFile(name)
		return store.Request{}, nil, err
	}
	if replaced != "" {
		u.removeFile(files.Name(replaced))
	}
	u.logger.Info("upload complete", "bytes", got.Size, "sha256", got.SHA256)
	u.metrics.Bytes("http", "up", got.Size)
	if err := u.requests.AddEvent(context.WithoutCancel(ctx), u.id, "info",
		fmt.Sprintf("Upload received over HTTP: %s, sha256 %s.", humanSize(got.Size), got.SHA256)); err != nil {
		u.logger.Warn("request log", "err", err)
	}
	return done, nil, nil
}

// removeFile removes a file this upload made or replaced (a start-up sweep
// removes what a failure here leaves).
func (u *upload) removeFile(name files.Name) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // bounded cleanup
	defer cancel()
	if err := u.files.Remove(ctx, u.id, name); err != nil {
		u.logger.Warn("remove an upload's file", "file", name, "err", err)
	}
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

// abort frees the request; an earlier complete upload stays as it was.
func (u *upload) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounded cleanup
	defer cancel()
	if err := u.requests.AbortUpload(ctx, u.id, u.token); err != nil {
		u.logger.Error("release upload lease", "err", err)
	}
}
