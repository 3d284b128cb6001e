package web

import (
	"html/template"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// funcs are the templates' functions.
var funcs = template.FuncMap{
	// v1 is a stored state in the API's words (pending, invalid, …).
	"v1": store.State.V1,
}
