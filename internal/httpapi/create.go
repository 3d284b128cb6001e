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
