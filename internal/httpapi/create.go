package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"

	"github.com/upgrade-server/upgrade-server/internal/input"
)

// newKey returns a request's private key: 16 bytes from crypto/rand in
// URL-safe base64, like Odoo's sample "Aw7pItGVKFuZ_FOR3U8VFQ==".
func newKey() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return base64.URLEncoding.EncodeToString(b)
}

// handleCreate checks every parameter (internal/input) and stores a draft
// request with a fresh key.
func handleCreate(requests RequestStore, opts Options) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		p, f := readParams(w, r)
		if f != nil {
			return reply{fails: []failure{*f}}
		}
		n, probs := input.Create(func(name string) string { return p[name] },
			input.Rules{Targets: opts.Targets, ContractValidFunc: opts.ContractValidFunc})
		if probs != nil {
			return reply{fails: fromProblems(probs)}
		}
		n.Key = newKey()
		req, err := requests.CreateRequest(r.Context(), n)
		if err != nil {
			return reply{err: err}
		}
		// The id is new, but a folder of it may be left from a request the
		// database forgot (a crash between a delete's row and its files, an
		// import that reset the ids): none of it is this request's.
		if err := opts.Data.ForgetRequest(req.ID); err != nil {
			return reply{err: err}
		}
		return reply{req: opts.record(req)}
	}
}
