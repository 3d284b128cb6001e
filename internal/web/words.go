package web

import (
	"encoding/json"
	"html/template"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/input"
)

// The form shows each refused parameter next to its field, in words. The
// same table serves the server (a form sent without JavaScript) and the
// browser (the form's script reads it from the page, for the v1 API's
// failures), so both say the same.

// reasonFields name the form field of the reasons that concern one field.
var reasonFields = map[string]string{
	input.ReasonTargetInvalid:    "target",
	input.ReasonContractNotFound: "contract",
	input.ReasonScenarioInvalid:  "contract",
	input.ReasonAimInvalid:       "aim",
	input.ReasonEmailInvalid:     "email",
	input.ReasonFilenameInvalid:  "dump",
}

// paramFields name the form field of a failure's param (PARAM:MISSING and
// PARAM:INVALID name it so).
var paramFields = map[string]string{
	"contract": "contract", "email": "email", "target": "target", "aim": "aim", "filename": "dump",
}

// words say each reason, or "<reason> <param>", for people; {detail} is
// replaced by the end of the API's message (what exactly is wrong).
var words = map[string]string{
	"PARAM:MISSING contract":     "Enter your contract code.",
	"PARAM:MISSING email":        "Enter your e-mail address.",
	"PARAM:MISSING target":       "Choose the version to upgrade to.",
	"PARAM:MISSING aim":          "Choose test or production.",
	"PARAM:MISSING filename":     "Choose the dump file to upload.",
	input.ReasonParamInvalid:     "This cannot be used: {detail}.",
	input.ReasonContractNotFound: "This server does not know this contract. Check the code of your Odoo subscription (it looks like M123456-abcdef).",
	input.ReasonScenarioInvalid:  "This scenario contract cannot be used: {detail}.",
	input.ReasonTargetInvalid:    "Choose one of the versions in the list.",
	input.ReasonEmailInvalid:     "Enter an e-mail address such as name@example.com.",
	input.ReasonAimInvalid:       "Choose test or production.",
	input.ReasonFilenameInvalid:  "This file's name cannot be used: rename the file to a plain name (no slash, backslash or control character, at most 255 bytes) and choose it again.",
}

// detail is what exactly is wrong, from an API message: what follows
// `parameter "x": ` (PARAM:INVALID), else the first ": ".
func detail(msg string) string {
	if i := strings.LastIndex(msg, `": `); i >= 0 {
		return strings.TrimSuffix(msg[i+3:], ".")
	}
	if _, after, ok := strings.Cut(msg, ": "); ok {
		return strings.TrimSuffix(after, ".")
	}
	return strings.TrimSuffix(msg, ".")
}

// explain says a refused parameter in words and names its field ("" when
// it concerns the whole form).
func explain(reason, param, message string) (field, text string) {
	field = reasonFields[reason]
	if field == "" {
		field = paramFields[param]
	}
	text = words[reason+" "+param]
	if text == "" {
		text = words[reason]
	}
	if text == "" {
		return field, message
	}
	return field, strings.Replace(text, "{detail}", detail(message), 1)
}

// wordsJSON is the table for the form's script.
func wordsJSON() template.JS {
	b, _ := json.Marshal(map[string]any{"fields": reasonFields, "params": paramFields, "words": words})
	return template.JS(b)
}
