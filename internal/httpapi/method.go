package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// reply is what a v1 method answers: failures, the request part, or an
// internal error that becomes SERVER:ERROR.
type reply struct {
	fails []failure
	req   any
	err   error
	// stopped: the server itself ended the call (an upload taken over),
	// which also ends the request's context; it is answered all the same.
	stopped bool
}

type methodFunc func(w http.ResponseWriter, r *http.Request) reply

// handleMethod writes a method's reply; every v1 answer leaves through
// here, and is counted and kept in the journal. Injected faults (admin API)
// apply here too.
func handleMethod(logger *slog.Logger, name string, h methodFunc, j *journal, m *metrics.Metrics, faults *fault.Injector) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID, _ := strconv.ParseInt(requestIDOf(r), 10, 64)
		var dropped *dropReader
		var rep reply
		if rule := faults.Draw(name, reqID, fault.Latency); rule != nil {
			select {
			case <-r.Context().Done():
			case <-time.After(rule.Delay()):
			}
		}
		status := http.StatusOK
		if rule := faults.Draw(name, reqID, fault.HTTPError, fault.ServerError); rule != nil {
			rep.err = errInjected
			if rule.Kind == fault.HTTPError {
				status = rule.Status
			}
		} else {
			if name == "upload" {
				if rule := faults.Draw(name, reqID, fault.DropUpload); rule != nil {
					dropped = &dropReader{r: r.Body, left: rule.AfterBytes}
					r.Body = dropped
				}
			}
			rep = h(w, r)
		}
		// A client that went away (its request's context ended) gets no
		// answer and is no failure of ours: its own outcome, logged at INFO.
		gone := r.Context().Err() != nil && !rep.stopped
		reasons := []string{}
		switch {
		case gone:
		case rep.err != nil:
			reasons = append(reasons, reasonServerError)
		default:
			for _, f := range rep.fails {
				reasons = append(reasons, f.Reason)
			}
		}
		outcome := "ok"
		switch {
		case gone:
			outcome = outcomeClientGone
		case len(reasons) > 0:
			outcome = reasons[0]
		}
		m.Call(name, outcome)
		host := r.RemoteAddr
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			host = host[:i]
		}
		j.add(JournalEntry{At: start.UTC(), Method: name, HTTP: r.Method, RequestID: replyRequestID(r, rep), Failures: reasons,
			ClientGone: gone, Duration: float64(time.Since(start).Microseconds()) / 1000, ClientIP: host,
			Reference: correlationID(r.Context())})
		switch {
		case dropped != nil && dropped.fired:
			panic(http.ErrAbortHandler) // the connection drops without an answer
		case gone:
			logger.LogAttrs(r.Context(), slog.LevelInfo, "client gone before the answer",
				slog.String("correlation_id", correlationID(r.Context())), slog.String("method", name), slog.Any("err", rep.err))
		case rep.err == errInjected:
			writeAnswer(w, r, logger, status, []failure{serverError(correlationID(r.Context()))}, nil)
		case rep.err != nil:
			writeInternal(w, r, logger, http.StatusOK, rep.err)
		default:
			writeAnswer(w, r, logger, http.StatusOK, rep.fails, rep.req)
		}
	})
}

var errInjected = errors.New("injected fault")

// outcomeClientGone is the metrics outcome of a call whose client went
// away before the answer (not a failure reason: nobody reads it).
const outcomeClientGone = "client_gone"

// dropReader ends an upload's body after left bytes, as a dropped
// connection would.
type dropReader struct {
	r     io.ReadCloser
	left  int64
	fired bool
}

func (d *dropReader) Read(p []byte) (int, error) {
	if d.left <= 0 {
		d.fired = true
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.left -= int64(n)
	return n, err
}

func (d *dropReader) Close() error { return d.r.Close() }

// authenticate finds the request named by the request and key parameters.
// An unknown id and a wrong key give the same REQUEST:NOT_FOUND, so ids
// cannot be probed; keys are compared in constant time.
func authenticate(ctx context.Context, requests RequestStore, p params) (store.Request, []failure, error) {
	rawID, hasID := p.get("request")
	key, hasKey := p.get("key")
	id, probs := input.Auth(rawID, hasID, key, hasKey)
	if probs != nil {
		return store.Request{}, fromProblems(probs), nil
	}
	req, err := store.RequestByKey(ctx, requests, id, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Request{}, []failure{requestNotFound()}, nil
	case err != nil:
		return store.Request{}, nil, err
	}
	return req, nil, nil
}

// transitionReply maps the store's answer to a state change.
func transitionReply(rec recorder, req store.Request, err error) reply {
	var se *store.StateError
	switch {
	case err == nil:
		return reply{req: rec.record(req)}
	case errors.As(err, &se):
		return reply{fails: []failure{stateFailure(se)}}
	case errors.Is(err, store.ErrNoUpload):
		return reply{fails: []failure{{Reason: reasonUploadMissing,
			Message: "No complete upload: upload the dump (upload, or SFTP: an interrupted transfer counts once resumed " +
				"with put -a to its end) before calling process"}}}
	case errors.Is(err, store.ErrUploadBusy):
		return reply{fails: []failure{uploadInProgress()}}
	case errors.Is(err, store.ErrNotFound):
		return reply{fails: []failure{requestNotFound()}}
	}
	return reply{err: err}
}

func uploadInProgress() failure {
	return failure{Reason: reasonUploadInProgress, Message: "An upload of this request is in progress; call process once it has ended"}
}

// authenticated runs fn for an authenticated request, reading the
// parameters from every transport.
func authenticated(requests RequestStore, fn func(r *http.Request, p params, req store.Request) reply) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		p, f := readParams(w, r)
		if f != nil {
			return reply{fails: []failure{*f}}
		}
		req, fails, err := authenticate(r.Context(), requests, p)
		if err != nil || fails != nil {
			return reply{fails: fails, err: err}
		}
		return fn(r, p, req)
	}
}

func handleStatus(requests RequestStore, rec recorder) methodFunc {
	return authenticated(requests, func(r *http.Request, p params, req store.Request) reply {
		if req.Scenario != nil && req.HoldPolls > 0 {
			if err := requests.CountStatusPoll(r.Context(), req.ID); err != nil {
				return reply{err: err}
			}
		}
		return reply{req: rec.record(req)}
	})
}

// handleProcess queues a request with a complete upload: one store call,
// whatever the upload's path (an SFTP upload is recorded by the daemon when
// its write handle closes cleanly).
func handleProcess(requests RequestStore, rec recorder) methodFunc {
	return authenticated(requests, func(r *http.Request, p params, req store.Request) reply {
		got, err := requests.Process(r.Context(), req.ID)
		return transitionReply(rec, got, err)
	})
}

func handleSkipTest(requests RequestStore, rec recorder) methodFunc {
	return authenticated(requests, func(r *http.Request, p params, req store.Request) reply {
		got, err := requests.Transition(r.Context(), req.ID, store.StateDelivered,
			"Tests skipped; the upgraded database is delivered.", store.StateTesting)
		return transitionReply(rec, got, err)
	})
}

// replyRequestID names the request a call was about: from its answer
// (parameters may have come in the body), else from the query string.
func replyRequestID(r *http.Request, rep reply) string {
	switch v := rep.req.(type) {
	case wireRequest:
		return strconv.FormatInt(v.ID, 10)
	case sftpAccess:
		return strconv.FormatInt(v.RequestID, 10)
	}
	return requestIDOf(r)
}
