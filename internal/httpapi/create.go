package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

var aims = []string{"test", "production"}

// newKey returns a request's private key: 16 bytes from crypto/rand in
// URL-safe base64, like Odoo's sample "Aw7pItGVKFuZ_FOR3U8VFQ==".
func newKey() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return base64.URLEncoding.EncodeToString(b)
}

func handleCreate(requests RequestStore, opts Options) methodFunc {
	return func(w http.ResponseWriter, r *http.Request) reply {
		p, f := readParams(w, r)
		if f != nil {
			return reply{fails: []failure{*f}}
		}
		n, fails := validateCreate(p, opts)
		if fails != nil {
			return reply{fails: fails}
		}
		req, err := requests.CreateRequest(r.Context(), n)
		if err != nil {
			return reply{err: err}
		}
		return reply{req: opts.record(req)}
	}
}

// validateCreate checks every parameter and reports every problem at once.
func validateCreate(p params, opts Options) (store.NewRequest, []failure) {
	var fails []failure
	n := store.NewRequest{Key: newKey()}

	n.Target = p.trimmed("target")
	switch {
	case n.Target == "":
		fails = append(fails, missingParam("target"))
	case !slices.Contains(opts.Targets, n.Target):
		fails = append(fails, failure{Reason: reasonTargetInvalid, Message: fmt.Sprintf("Invalid value %q", n.Target),
			Value: ptr(n.Target), Expected: opts.Targets})
	}

	n.Contract = p.trimmed("contract")
	switch {
	case n.Contract == "":
		fails = append(fails, missingParam("contract"))
	case scenario.Is(n.Contract):
		sc, err := scenario.Parse(n.Contract)
		switch {
		case err != nil:
			fails = append(fails, failure{Reason: reasonScenarioInvalid, Message: "Invalid scenario contract: " + err.Error(),
				Value: ptr(n.Contract)})
		case sc.ContractNotFound:
			fails = append(fails, failure{Reason: reasonContractNotFound,
				Message: "Can not find contract " + n.Contract, Code: n.Contract})
		default:
			n.Scenario, n.HoldPolls = &n.Contract, sc.Polls
		}
	case opts.ContractValidFunc != nil && !opts.ContractValidFunc(n.Contract):
		fails = append(fails, failure{Reason: reasonContractNotFound,
			Message: "Can not find contract " + n.Contract, Code: n.Contract})
	}

	n.Email = p.trimmed("email")
	switch {
	case n.Email == "":
		fails = append(fails, missingParam("email"))
	case !validEmail(n.Email):
		fails = append(fails, failure{Reason: reasonEmailInvalid,
			Message: fmt.Sprintf("Invalid e-mail address %q", n.Email), Value: ptr(n.Email)})
	}

	n.Aim = p.trimmed("aim")
	switch {
	case n.Aim == "":
		fails = append(fails, missingParam("aim"))
	case !slices.Contains(aims, n.Aim):
		fails = append(fails, failure{Reason: reasonAimInvalid, Message: fmt.Sprintf("Invalid value %q", n.Aim),
			Value: ptr(n.Aim), Expected: aims})
	}

	n.Filename = p.trimmed("filename")
	switch {
	case n.Filename == "":
		fails = append(fails, missingParam("filename"))
	case !validFilename(n.Filename):
		fails = append(fails, failure{Reason: reasonFilenameInvalid,
			Message: "A file name is one plain name (no slash, no control character, at most 255 bytes)",
			Value:   ptr(n.Filename)})
	}

	if tz := p.trimmed("timezone"); tz != "" {
		if _, err := time.LoadLocation(tz); err != nil || len(tz) > 64 {
			fails = append(fails, failure{Reason: reasonTimezoneInvalid,
				Message: fmt.Sprintf("Unknown time zone %q (use an IANA name such as Europe/Brussels)", tz), Value: ptr(tz)})
		} else {
			n.Timezone = &tz
		}
	}
	return n, fails
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || len(s) > 254 {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-1
}

// validFilename accepts what can be shown as the SFTP shared file: one
// plain name. It is never used as a storage path.
func validFilename(s string) bool {
	if len(s) > 255 || !utf8.ValidString(s) || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if c == '/' || c == '\\' || unicode.IsControl(c) {
			return false
		}
	}
	return true
}
