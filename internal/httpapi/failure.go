package httpapi

import (
	"fmt"
	"strings"

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

// The failure reasons. TARGET:INVALID and CONTRACT:NOT_FOUND are Odoo's own;
// the others follow their AREA:PROBLEM style. README.md lists them all.
const (
	reasonTargetInvalid    = "TARGET:INVALID"
	reasonContractNotFound = "CONTRACT:NOT_FOUND"
	reasonScenarioInvalid  = "SCENARIO:INVALID"
	reasonParamMissing     = "PARAM:MISSING"
	reasonParamInvalid     = "PARAM:INVALID"
	reasonParamsMalformed  = "PARAMS:MALFORMED"
	reasonParamsTooLarge   = "PARAMS:TOO_LARGE"
	reasonAimInvalid       = "AIM:INVALID"
	reasonEmailInvalid     = "EMAIL:INVALID"
	reasonFilenameInvalid  = "FILENAME:INVALID"
	reasonTimezoneInvalid  = "TIMEZONE:INVALID"
	reasonRequestNotFound  = "REQUEST:NOT_FOUND"
	reasonStateInvalid     = "STATE:INVALID"
	reasonUploadEmpty      = "UPLOAD:EMPTY"
	reasonUploadTooLarge   = "UPLOAD:TOO_LARGE"
	reasonUploadInterrupt  = "UPLOAD:INTERRUPTED"
	reasonUploadInProgress = "UPLOAD:IN_PROGRESS"
	reasonUploadMissing    = "UPLOAD:MISSING"
	reasonUploadNoSpace    = "UPLOAD:NO_SPACE"
	reasonSSHKeysInvalid   = "SSH_KEYS:INVALID"
	reasonSSHKeysEmpty     = "SSH_KEYS:EMPTY"
	reasonFileNotFound     = "FILE:NOT_FOUND"
	reasonRouteNotFound    = "ROUTE:NOT_FOUND"
	reasonMethodNotAllowed = "METHOD:NOT_ALLOWED"
	reasonServerError      = "SERVER:ERROR"
)

func ptr[T any](v T) *T { return &v }

func missingParam(name string) failure {
	return failure{Reason: reasonParamMissing, Message: fmt.Sprintf("Missing parameter %q", name), Param: name}
}

func invalidParam(name, value, why string) failure {
	return failure{Reason: reasonParamInvalid, Message: fmt.Sprintf("Invalid value %q for parameter %q: %s", value, name, why),
		Param: name, Value: ptr(value)}
}

func requestNotFound() failure {
	return failure{Reason: reasonRequestNotFound, Message: "No request matches this id and key"}
}

// v1States renders the stored states an operation needs in v1's vocabulary.
func stateFailure(e *store.StateError) failure {
	want := make([]string, len(e.Want))
	for i, s := range e.Want {
		want[i] = v1State(s)
	}
	cur := v1State(e.Current)
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
