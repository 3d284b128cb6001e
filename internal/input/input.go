// Package input checks what clients send, in one place for every API that
// takes it (the HTTP v1 methods today, a JSON-RPC front tomorrow): the
// parameters of create, the request id and key that name a request, and the
// SSH keys of request_sftp_access. A refusal is a Problem in v1's failure
// vocabulary (reason, message, and where it helps param, value, expected or
// code), never an error from the database further down.
//
// Every text parameter must be valid UTF-8 without control or format
// characters (NUL, line breaks, Unicode direction marks such as U+202E,
// zero-width characters, line and paragraph separators) and within its
// length bound below. Values are trimmed of surrounding white space first.
package input

import (
	"crypto/rsa"
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// The failure reasons this package gives. TARGET:INVALID and
// CONTRACT:NOT_FOUND are Odoo's own; the others follow their AREA:PROBLEM
// style.
const (
	ReasonTargetInvalid    = "TARGET:INVALID"
	ReasonContractNotFound = "CONTRACT:NOT_FOUND"
	ReasonScenarioInvalid  = "SCENARIO:INVALID"
	ReasonParamMissing     = "PARAM:MISSING"
	ReasonParamInvalid     = "PARAM:INVALID"
	ReasonAimInvalid       = "AIM:INVALID"
	ReasonEmailInvalid     = "EMAIL:INVALID"
	ReasonFilenameInvalid  = "FILENAME:INVALID"
	ReasonTimezoneInvalid  = "TIMEZONE:INVALID"
	ReasonSSHKeysInvalid   = "SSH_KEYS:INVALID"
	ReasonSSHKeysEmpty     = "SSH_KEYS:EMPTY"
)

// The longest accepted value of each text parameter, in bytes (README.md,
// "Failures").
const (
	MaxContract = 256
	MaxEmail    = 254 // RFC 5321's path limit
	MaxTarget   = 32
	MaxAim      = 16
	MaxFilename = 255 // a file name on every common file system
	MaxTimezone = 64
	MaxKey      = 128 // keys are 24 characters; imported ones may differ
	MaxRequest  = 19  // digits of the largest int64
	MaxSSHKeys  = 100 // keys in one grant
)

// Problem is one refused parameter.
type Problem struct {
	Reason   string
	Message  string
	Code     string
	Value    *string // nil when the value itself cannot be shown safely
	Expected []string
	Param    string
}

// Aims are the valid values of aim.
var Aims = []string{"test", "production"}

// Rules are a deployment's choices that create checks against.
type Rules struct {
	// Targets are the valid target versions, in the order failures list them.
	Targets []string
	// ContractValidFunc says whether a contract exists; nil accepts any.
	ContractValidFunc func(contract string) bool
}

// Missing is PARAM:MISSING for name.
func Missing(name string) Problem {
	return Problem{Reason: ReasonParamMissing, Message: fmt.Sprintf("Missing parameter %q", name), Param: name}
}

// Invalid is PARAM:INVALID for name: why says what is wrong; value is
// echoed only when it is short, clean text.
func Invalid(name, value, why string) Problem {
	if textProblem(value, 64) != "" {
		return Problem{Reason: ReasonParamInvalid, Message: fmt.Sprintf("Invalid value for parameter %q: %s", name, why), Param: name}
	}
	return Problem{Reason: ReasonParamInvalid, Message: fmt.Sprintf("Invalid value %q for parameter %q: %s", value, name, why),
		Param: name, Value: &value}
}

// Text checks a text parameter: "" when it is valid UTF-8 of at most max
// bytes without control or format characters, else what is wrong.
func Text(s string, max int) string { return textProblem(s, max) }

func textProblem(s string, max int) string {
	switch {
	case !utf8.ValidString(s):
		return "it is not valid UTF-8"
	case strings.IndexFunc(s, forbidden) >= 0:
		return "it contains a control or format character (NUL, line break, Unicode direction mark…)"
	case len(s) > max:
		return fmt.Sprintf("it is longer than %d bytes", max)
	}
	return ""
}

// forbidden: the characters no parameter and no file name the server shows
// may hold. Cc (C0/C1 controls, NUL, line breaks, tab), Cf (format:
// direction marks and overrides U+200E, U+200F, U+202A–U+202E,
// U+2066–U+2069, U+061C, zero-width characters, U+FEFF), line and
// paragraph separators, and the replacement character of broken input.
func forbidden(r rune) bool {
	return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) ||
		unicode.Is(unicode.Zp, r) || r == utf8.RuneError
}

// RequestID reads a request id in its one canonical form: a positive
// decimal without sign, leading zeros or spaces ("58", never "+58", "058"
// or " 58").
func RequestID(s string) (int64, bool) {
	if len(s) == 0 || len(s) > MaxRequest || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

// Auth checks the parameters that name a request. It returns the id, or
// the problems: PARAM:MISSING for an absent or empty one, PARAM:INVALID
// for an id that is not a canonical positive decimal or a key that is not
// clean text of at most MaxKey bytes. Whether the key is right is the
// caller's to check.
func Auth(rawID string, hasID bool, key string, hasKey bool) (int64, []Problem) {
	var probs []Problem
	var id int64
	switch {
	case !hasID || rawID == "":
		probs = append(probs, Missing("request"))
	default:
		var ok bool
		if id, ok = RequestID(rawID); !ok {
			probs = append(probs, Invalid("request", rawID, "a request id is a positive integer written without sign, leading zeros or spaces"))
		}
	}
	switch {
	case !hasKey || key == "":
		probs = append(probs, Missing("key"))
	case textProblem(key, MaxKey) != "":
		probs = append(probs, Invalid("key", key, textProblem(key, MaxKey)))
	}
	return id, probs
}

// Create checks every parameter of create and reports every problem at
// once. get returns a parameter's value ("" when absent). The request it
// returns has no key: the caller chooses it.
func Create(get func(name string) string, rules Rules) (store.NewRequest, []Problem) {
	var n store.NewRequest
	c := checker{get: get}
	c.target(&n, rules)
	c.contract(&n, rules)
	if e, ok := c.text("email", MaxEmail); ok {
		n.Email = e
		if !validEmail(e) {
			c.probs = append(c.probs, Problem{Reason: ReasonEmailInvalid, Message: fmt.Sprintf("Invalid e-mail address %q", e), Value: &e})
		}
	}
	c.aim(&n)
	probs := c.probs

	// A file name has its own reason, whatever is wrong with it.
	switch f := strings.TrimSpace(get("filename")); {
	case f == "":
		probs = append(probs, Missing("filename"))
	case !ValidFilename(f):
		p := Problem{Reason: ReasonFilenameInvalid, Message: "A file name is one plain name: no slash or backslash, " +
			"no control or format character (such as Unicode direction marks), not . or .., at most 255 bytes"}
		if textProblem(f, MaxFilename) == "" {
			p.Value = &f
		}
		probs = append(probs, p)
	default:
		n.Filename = f
	}

	if tz := strings.TrimSpace(get("timezone")); tz != "" {
		if why := textProblem(tz, MaxTimezone); why != "" {
			probs = append(probs, Problem{Reason: ReasonTimezoneInvalid, Message: "Invalid time zone: " + why})
		} else if _, err := time.LoadLocation(tz); err != nil {
			probs = append(probs, Problem{Reason: ReasonTimezoneInvalid,
				Message: fmt.Sprintf("Unknown time zone %q (use an IANA name such as Europe/Brussels)", tz), Value: &tz})
		} else {
			n.Timezone = &tz
		}
	}
	return n, probs
}

// checker collects the problems of create's parameters, of either API.
type checker struct {
	get   func(name string) string
	probs []Problem
}

// text trims a parameter and checks it; ok is false after a problem.
func (c *checker) text(name string, max int) (string, bool) {
	v := strings.TrimSpace(c.get(name))
	if v == "" {
		c.probs = append(c.probs, Missing(name))
		return "", false
	}
	if why := textProblem(v, max); why != "" {
		c.probs = append(c.probs, Invalid(name, v, why))
		return "", false
	}
	return v, true
}

func (c *checker) target(n *store.NewRequest, rules Rules) {
	if t, ok := c.text("target", MaxTarget); ok {
		n.Target = t
		if !slices.Contains(rules.Targets, t) {
			c.probs = append(c.probs, Problem{Reason: ReasonTargetInvalid, Message: fmt.Sprintf("Invalid value %q", t),
				Value: &t, Expected: rules.Targets})
		}
	}
}

func (c *checker) contract(n *store.NewRequest, rules Rules) {
	ct, ok := c.text("contract", MaxContract)
	if !ok {
		return
	}
	n.Contract = ct
	switch {
	case scenario.Is(ct):
		sc, err := scenario.Parse(ct)
		switch {
		case err != nil:
			c.probs = append(c.probs, Problem{Reason: ReasonScenarioInvalid, Message: "Invalid scenario contract: " + err.Error(),
				Value: &ct})
		case sc.ContractNotFound:
			c.probs = append(c.probs, Problem{Reason: ReasonContractNotFound, Message: "Can not find contract " + ct, Code: ct})
		default:
			n.Scenario, n.HoldPolls = &n.Contract, sc.Polls
		}
	case rules.ContractValidFunc != nil && !rules.ContractValidFunc(ct):
		c.probs = append(c.probs, Problem{Reason: ReasonContractNotFound, Message: "Can not find contract " + ct, Code: ct})
	}
}

func (c *checker) aim(n *store.NewRequest) {
	if a, ok := c.text("aim", MaxAim); ok {
		n.Aim = a
		if !slices.Contains(Aims, a) {
			c.probs = append(c.probs, Problem{Reason: ReasonAimInvalid, Message: fmt.Sprintf("Invalid value %q", a), Value: &a, Expected: Aims})
		}
	}
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || len(s) > MaxEmail {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-1
}

// ValidFilename accepts what can be shown as the SFTP shared file and in a
// download's Content-Disposition: one plain name of clean text. It is
// never used as a storage path.
func ValidFilename(s string) bool {
	if s == "" || s == "." || s == ".." || textProblem(s, MaxFilename) != "" {
		return false
	}
	return !strings.ContainsAny(s, `/\`)
}

// ShownName is name as the server shows it (SFTP listing, shared_file,
// Content-Disposition, status page): create refuses every name that needs
// it, but a name from elsewhere (an imported export, an older release) has
// each forbidden character, slash and backslash replaced by "_", and is cut
// to MaxFilename bytes.
func ShownName(name string) string {
	name = strings.ToValidUTF8(name, "_")
	name = strings.Map(func(r rune) rune {
		if forbidden(r) || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, name)
	for len(name) > MaxFilename {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	if name == "" || name == "." || name == ".." {
		return "_"
	}
	return name
}

// SSHKeys reads request_sftp_access's authorized_keys text: one public key
// a line, blank lines and # comments allowed. Options (command=, from=, …),
// certificates, DSA and short RSA keys, and lines that are not clean text
// are refused, each bad line with its own SSH_KEYS:INVALID; no key at all
// is SSH_KEYS:EMPTY.
func SSHKeys(text string) ([]store.SFTPKey, []Problem) {
	var keys []store.SFTPKey
	var probs []Problem
	bad := func(n int, why string) {
		probs = append(probs, Problem{Reason: ReasonSSHKeysInvalid, Message: fmt.Sprintf("ssh_keys line %d: %s", n, why),
			Param: "ssh_keys"})
	}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if why := textProblem(strings.ReplaceAll(line, "\t", " "), 16<<10); why != "" {
			bad(n, "not a public key: "+why)
			continue
		}
		pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		switch {
		case err != nil:
			bad(n, "not a public key in authorized_keys format")
			continue
		case len(rest) > 0:
			bad(n, "unexpected text after the key")
			continue
		case len(options) > 0:
			bad(n, fmt.Sprintf("key options such as %q are not allowed; give the bare key", options[0]))
			continue
		}
		if _, isCert := pk.(*ssh.Certificate); isCert {
			bad(n, "certificates are not accepted; give the bare public key")
			continue
		}
		switch pk.Type() {
		case ssh.KeyAlgoDSA:
			bad(n, "DSA keys are not accepted; use ed25519, ECDSA or RSA (2048 bits or more)")
			continue
		case ssh.KeyAlgoRSA:
			if ck, ok := pk.(ssh.CryptoPublicKey); ok {
				if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
					bad(n, fmt.Sprintf("RSA key of %d bits is too short (2048 or more)", rk.N.BitLen()))
					continue
				}
			}
		}
		keys = append(keys, store.SFTPKey{
			Fingerprint: ssh.FingerprintSHA256(pk),
			PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
			Comment:     comment,
		})
	}
	if probs != nil {
		return nil, probs
	}
	if len(keys) == 0 {
		return nil, []Problem{{Reason: ReasonSSHKeysEmpty, Message: "ssh_keys holds no public key", Param: "ssh_keys"}}
	}
	if len(keys) > MaxSSHKeys {
		return nil, []Problem{{Reason: ReasonSSHKeysInvalid, Param: "ssh_keys",
			Message: fmt.Sprintf("ssh_keys holds %d keys; at most %d are accepted", len(keys), MaxSSHKeys)}}
	}
	return keys, nil
}
