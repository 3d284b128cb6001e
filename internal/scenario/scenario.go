// Package scenario reads the magic contract codes that make a request
// behave in a chosen, deterministic way, like a payment provider's test
// card numbers: "scenario:" followed by comma-separated directives.
//
//	scenario:contract-not-found     create fails with CONTRACT:NOT_FOUND
//	scenario:fail                   processing ends invalid ("The upgrade failed (scenario).")
//	scenario:fail=<message>         … with that customer_message (URL-encode it in a query string)
//	scenario:testing                processing stops in testing until skip_test
//	scenario:cancel                 processing ends cancelled
//	scenario:duration=<seconds>     processing takes that long (0 is instant)
//	scenario:polls=<n>              the request stays pending for n status calls, then processing for n more
//
// A scenario request never runs the upgrade engine: its upgraded dump is the
// upload itself, so client test suites can upload any bytes.
package scenario

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every scenario contract.
const Prefix = "scenario:"

// Scenario is what a contract asks for.
type Scenario struct {
	ContractNotFound bool
	Fail             bool
	FailMessage      string
	Testing          bool
	Cancel           bool
	// Duration is how long processing takes; nil means the server default.
	Duration *time.Duration
	Polls    int
}

// DefaultFailMessage is the customer_message of scenario:fail.
const DefaultFailMessage = "The upgrade failed (scenario)."

// Is reports whether contract is a scenario contract.
func Is(contract string) bool { return strings.HasPrefix(contract, Prefix) }

// Parse reads a scenario contract. It fails, saying which directive, for
// an unknown or malformed one, or for outcomes that exclude each other.
func Parse(contract string) (Scenario, error) {
	var s Scenario
	rest, ok := strings.CutPrefix(contract, Prefix)
	if !ok {
		return s, fmt.Errorf("not a scenario contract")
	}
	if strings.TrimSpace(rest) == "" {
		return s, fmt.Errorf("no directive after %q", Prefix)
	}
	outcomes := 0
	for _, d := range splitDirectives(rest) {
		name, arg, hasArg := strings.Cut(d, "=")
		name = strings.TrimSpace(name)
		switch name {
		case "contract-not-found":
			s.ContractNotFound = true
		case "fail":
			s.Fail, s.FailMessage = true, DefaultFailMessage
			if hasArg && strings.TrimSpace(arg) != "" {
				s.FailMessage = strings.TrimSpace(arg)
			}
			outcomes++
		case "testing":
			s.Testing = true
			outcomes++
		case "cancel":
			s.Cancel = true
			outcomes++
		case "duration":
			secs, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
			if !hasArg || err != nil || secs < 0 || secs > 7*24*3600 {
				return s, fmt.Errorf("duration=%s: give seconds between 0 and 604800", arg)
			}
			d := time.Duration(secs * float64(time.Second))
			s.Duration = &d
		case "polls":
			n, err := strconv.Atoi(strings.TrimSpace(arg))
			if !hasArg || err != nil || n < 0 || n > 1000 {
				return s, fmt.Errorf("polls=%s: give a number of status calls between 0 and 1000", arg)
			}
			s.Polls = n
		default:
			return s, fmt.Errorf("unknown directive %q (contract-not-found, fail, testing, cancel, duration=, polls=)", name)
		}
	}
	if outcomes > 1 {
		return s, fmt.Errorf("fail, testing and cancel exclude each other")
	}
	return s, nil
}

// splitDirectives splits on commas, except inside a fail= message, which
// runs to the end.
func splitDirectives(s string) []string {
	var out []string
	for s != "" {
		if strings.HasPrefix(strings.TrimSpace(s), "fail=") {
			out = append(out, strings.TrimSpace(s))
			break
		}
		d, rest, _ := strings.Cut(s, ",")
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
		s = rest
	}
	return out
}
