package httpapi

import (
	"net/http"

	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// handleCreate checks every parameter (internal/input) and stores a draft
// request with a fresh key.
func handleCreate(requests RequestStore, fs FileStore, rules input.Rules, rec recorder) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		p, f := readParams(w, r)
		if f != nil {
			return reply{fails: []failure{*f}}
		}
		n, probs := input.Create(func(name string) string { return p[name] }, rules)
		if probs != nil {
			return reply{fails: fromProblems(probs)}
		}
		n.Key = token.Key()
		req, err := requests.CreateRequest(r.Context(), n)
		if err != nil {
			return reply{err: err}
		}
		// The id is new, but files of it may be left from a request the
		// database forgot (a crash between a delete's row and its files, an
		// import that reset the ids): none of them is this request's.
		if err := fs.RemoveRequest(r.Context(), req.ID); err != nil {
			return reply{err: err}
		}
		return reply{req: rec.record(req)}
	}
}

// defaultUpgradeFilename names the dump of a one-call upgrade that gives
// no filename (the older tool sends plain SQL).
const defaultUpgradeFilename = "database.sql"

// handleUpgrade is v1's one-call method of an older Odoo command-line
// tool: create's parameters in the query string (filename optional), the
// dump as the body. It creates the request, stores the upload as upload
// does and queues it; the answer is the request (pending), or the
// failures of whichever step failed, with the request once it exists (a
// draft: its key lets the client upload again).
func handleUpgrade(requests RequestStore, fs FileStore, rules input.Rules, up uploader, rec recorder) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		q := queryParams(r)
		if q["filename"] == "" {
			q["filename"] = defaultUpgradeFilename
		}
		n, probs := input.Create(func(name string) string { return q[name] }, rules)
		switch {
		case probs != nil:
			return reply{fails: fromProblems(probs)}
		case r.ContentLength == 0:
			return reply{fails: []failure{uploadEmpty()}}
		case up.max > 0 && r.ContentLength > up.max:
			return reply{fails: []failure{uploadTooLarge(up.max)}}
		}
		n.Key = token.Key()
		req, err := requests.CreateRequest(r.Context(), n)
		if err != nil {
			return reply{err: err}
		}
		if err := fs.RemoveRequest(r.Context(), req.ID); err != nil {
			return reply{err: err}
		}
		tok := token.Hex(16)
		if _, err := requests.TakeUpload(r.Context(), req.ID, tok, up.lease, false); err != nil {
			return transitionReply(rec, req, err)
		}
		u := &upload{uploader: up, logger: up.logger.With("request_id", req.ID), id: req.ID, token: tok}
		got, fails, err := u.receive(w, r)
		if err != nil || fails != nil {
			u.abort()
			return reply{fails: fails, err: err, stopped: u.stopped, req: rec.record(req)}
		}
		queued, err := requests.Process(r.Context(), got.ID)
		return transitionReply(rec, queued, err)
	}
}
