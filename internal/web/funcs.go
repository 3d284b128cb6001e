package web

import "html/template"

// funcs are the templates' functions.
var funcs = template.FuncMap{
	// v1 is a stored state in the API's words (pending, invalid, …).
	"v1": v1State,
}
