package httpapi

import (
	"fmt"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// failure is one entry of an answer's "failures" list. reason and message
// are always present; the rest only where they say something.
type failure struct {
	Reason   string   `json:"reason"`
	Message  string   `json:"message"`
	Code     string   `json:"code,omitempty"`
	Value    *string  `json:"value,omitempty"`
	Expected []string `json:"expected,omitempty"`
	Param    string   `json:"param,omitempty"`
}

// The failure reasons of the HTTP API; those of the parameters are
// internal/input's. TARGET:INVALID and CONTRACT:NOT_FOUND are Odoo's own;
// the others follow their AREA:PROBLEM style. README.md lists them all.
const (
	reasonParamsMalformed  = "PARAMS:MALFORMED"
	reasonParamsTooLarge   = "PARAMS:TOO_LARGE"
	reasonRequestNotFound  = "REQUEST:NOT_FOUND"
	reasonStateInvalid     = "STATE:INVALID"
	reasonUploadEmpty      = "UPLOAD:EMPTY"
	reasonUploadTooLarge   = "UPLOAD:TOO_LARGE"
	reasonUploadInterrupt  = "UPLOAD:INTERRUPTED"
	reasonUploadInProgress = "UPLOAD:IN_PROGRESS"
	reasonUploadMissing    = "UPLOAD:MISSING"
	reasonUploadNoSpace    = "UPLOAD:NO_SPACE"
	reasonFileNotFound     = "FILE:NOT_FOUND"
	reasonRouteNotFound    = "ROUTE:NOT_FOUND"
	reasonMethodNotAllowed = "METHOD:NOT_ALLOWED"
	reasonServerError      = "SERVER:ERROR"
)

func ptr[T any](v T) *T { return &v }

func missingParam(name string) failure { return fromProblem(input.Missing(name)) }

// fromProblems renders internal/input's problems as v1 failures.
func fromProblems(probs []input.Problem) []failure {
	var out []failure
	for _, p := range probs {
		out = append(out, fromProblem(p))
	}
	return out
}

func fromProblem(p input.Problem) failure {
	return failure{Reason: p.Reason, Message: p.Message, Code: p.Code, Value: p.Value, Expected: p.Expected, Param: p.Param}
}

func requestNotFound() failure {
	return failure{Reason: reasonRequestNotFound, Message: "No request matches this id and key"}
}

// stateFailure is the failure of an operation the request's state does not allow,
// naming the states it needs in v1's vocabulary.
func stateFailure(e *store.StateError) failure {
	want := make([]string, len(e.Want))
	for i, s := range e.Want {
		want[i] = s.V1()
	}
	cur := e.Current.V1()
	return failure{
		Reason:   reasonStateInvalid,
		Message:  fmt.Sprintf("The request is %s; this needs it to be %s", cur, strings.Join(want, " or ")),
		Value:    ptr(cur),
		Expected: want,
	}
}

func serverError(correlationID string) failure {
	return failure{Reason: reasonServerError,
		Message: "Internal error; please retry later (reference " + correlationID + ")"}
}
