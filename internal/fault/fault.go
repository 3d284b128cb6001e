// Package fault injects failures on purpose, for client test suites: rules
// with match conditions and a probability, drawn from a seedable random
// source so a run can be repeated exactly. Rules live in the process that
// received them (set them on each replica).
package fault

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// The kinds of fault.
const (
	Latency        = "latency"         // delay an HTTP call by LatencyMS
	HTTPError      = "http_error"      // answer an HTTP call with Status (5xx) and a SERVER:ERROR body
	ServerError    = "server_error"    // answer HTTP 200 with a SERVER:ERROR failure
	DropUpload     = "drop_upload"     // drop the connection after AfterBytes of an HTTP upload
	SFTPDisconnect = "sftp_disconnect" // close an SFTP session after AfterBytes in either direction
	SFTPThrottle   = "sftp_throttle"   // limit an SFTP session to RateBytesPerSec
)

// Rule is one fault and when it applies.
type Rule struct {
	ID   int    `json:"id"`
	Kind string `json:"kind"`
	// Method is the v1 method it applies to ("create", "upload", …);
	// "" or "*" means any. SFTP rules ignore it.
	Method string `json:"method,omitempty"`
	// RequestID limits it to one request (0: any).
	RequestID int64 `json:"request_id,omitempty"`
	// Probability of applying when it matches (0 is taken as 1).
	Probability float64 `json:"probability,omitempty"`
	// Times caps how often it applies (0: no cap); Applied counts.
	Times   int `json:"times,omitempty"`
	Applied int `json:"applied"`

	LatencyMS       int   `json:"latency_ms,omitempty"`
	Status          int   `json:"status,omitempty"`
	AfterBytes      int64 `json:"after_bytes,omitempty"`
	RateBytesPerSec int64 `json:"rate_bytes_per_sec,omitempty"`
}

// Latency as a duration.
func (r Rule) Delay() time.Duration { return time.Duration(r.LatencyMS) * time.Millisecond }

func (r Rule) validate() error {
	switch r.Kind {
	case Latency:
		if r.LatencyMS <= 0 || r.LatencyMS > 600_000 {
			return errors.New("latency needs latency_ms between 1 and 600000")
		}
	case HTTPError:
		if r.Status < 400 || r.Status > 599 {
			return errors.New("http_error needs a status between 400 and 599")
		}
	case ServerError:
	case DropUpload, SFTPDisconnect:
		if r.AfterBytes < 0 {
			return errors.New(r.Kind + " needs after_bytes >= 0")
		}
	case SFTPThrottle:
		if r.RateBytesPerSec <= 0 {
			return errors.New("sftp_throttle needs rate_bytes_per_sec > 0")
		}
	default:
		return fmt.Errorf("unknown kind %q (latency, http_error, server_error, drop_upload, sftp_disconnect, sftp_throttle)", r.Kind)
	}
	if r.Probability < 0 || r.Probability > 1 {
		return errors.New("probability is between 0 and 1")
	}
	if r.Times < 0 {
		return errors.New("times is >= 0")
	}
	return nil
}

// Injector holds the rules of one process.
type Injector struct {
	mu     sync.Mutex
	rules  []*Rule
	nextID int
	rng    *rand.Rand
	seed   uint64
}

// New returns an injector without rules, seeded with seed.
func New(seed uint64) *Injector {
	return &Injector{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed: seed}
}

// Seed restarts the random source, so the same calls draw the same faults.
func (in *Injector) Seed(seed uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	in.seed = seed
}

// Add validates and adds a rule, returning it with its id.
func (in *Injector) Add(r Rule) (Rule, error) {
	if err := r.validate(); err != nil {
		return Rule{}, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.nextID++
	r.ID, r.Applied = in.nextID, 0
	in.rules = append(in.rules, &r)
	return r, nil
}

// List returns the rules and the seed.
func (in *Injector) List() ([]Rule, uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]Rule, 0, len(in.rules))
	for _, r := range in.rules {
		out = append(out, *r)
	}
	return out, in.seed
}

// Remove deletes one rule; false if there was none.
func (in *Injector) Remove(id int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, r := range in.rules {
		if r.ID == id {
			in.rules = append(in.rules[:i], in.rules[i+1:]...)
			return true
		}
	}
	return false
}

// Clear deletes every rule.
func (in *Injector) Clear() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.rules = nil
}

// Draw returns the first rule of one of kinds that matches and fires, and
// counts it; nil when none does. A nil injector never fires.
func (in *Injector) Draw(method string, requestID int64, kinds ...string) *Rule {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, r := range in.rules {
		if !slices.Contains(kinds, r.Kind) || (r.Method != "" && r.Method != "*" && r.Method != method) ||
			(r.RequestID != 0 && r.RequestID != requestID) || (r.Times > 0 && r.Applied >= r.Times) {
			continue
		}
		p := r.Probability
		if p == 0 {
			p = 1
		}
		if p < 1 && in.rng.Float64() >= p {
			continue
		}
		r.Applied++
		c := *r
		return &c
	}
	return nil
}
