package web_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The API's JSON 404s, byte for byte (httpapi's testdata/*.golden).
const (
	requestNotFoundJSON = `{
  "failures": [
    {
      "reason": "REQUEST:NOT_FOUND",
      "message": "No request matches this id and key"
    }
  ],
  "request": null
}
`
	routeNotFoundJSON = `{
  "failures": [
    {
      "reason": "ROUTE:NOT_FOUND",
      "message": "No such endpoint: %s"
    }
  ],
  "request": null
}
`
)

// apiAccepts are the Accept headers of API clients: none (curl -s, pycurl,
// Odoo's client), curl's */*, and a JSON client's.
var apiAccepts = []string{"", "*/*", "application/json"}

// TestNotFound: on the whole server, a browser that reaches an unknown
// page, a wrong key (status page, status.json, file URLs) or a file not
// there yet gets a small page leading to the form; API clients get the
// API's JSON answers, byte for byte as before the pages existed. Without
// an admin token, the console is an unknown page like any other.
func TestNotFound(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{noAdmin: true})
	a := srv.newRequest(t, "M1", "db.dump", nil)
	key := a.Request["key"].(string)
	wrong := func(u string) string { return strings.Replace(u, key, "Aw7pItGVKFuZ_FOR3U8VFQ==", 1) }
	status := a.Request["status_url"].(string)

	cases := []struct {
		name, url, json string
	}{
		{"an unknown page", srv.URL + "/nope", fmt.Sprintf(routeNotFoundJSON, "/nope")},
		{"an unknown asset", srv.URL + "/assets/nope.js", fmt.Sprintf(routeNotFoundJSON, "/assets/nope.js")},
		{"the console without a token", srv.URL + "/admin/", fmt.Sprintf(routeNotFoundJSON, "/admin/")},
		{"the console's sign-in without a token", srv.URL + "/admin/sign-in", fmt.Sprintf(routeNotFoundJSON, "/admin/sign-in")},
		{"a status page with a wrong key", wrong(status), requestNotFoundJSON},
		{"a status page with a wrong region", strings.Replace(status, "/eu1/", "/us1/", 1), requestNotFoundJSON},
		{"a status page of no request", strings.Replace(status, fmt.Sprintf("/%d/", reqID(a)), "/987654/", 1), requestNotFoundJSON},
		{"status.json with a wrong key", wrong(status) + ".json", requestNotFoundJSON},
		{"a file URL with a wrong key", wrong(a.Request["upgraded_dump_url"].(string)), requestNotFoundJSON},
	}
	for _, c := range cases {
		for _, accept := range apiAccepts {
			var hdr []string
			if accept != "" {
				hdr = []string{"Accept", accept}
			}
			resp, b := get(t, nil, c.url, hdr...)
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" || string(b) != c.json {
				t.Errorf("%s, Accept %q: HTTP %d %s\n%s", c.name, accept, resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
		}
		resp, b := get(t, nil, c.url, "Accept", browserAccept)
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(b), "<h1>Nothing here</h1>") || !strings.Contains(string(b), `<a class="button" href="/">`) {
			t.Errorf("%s, for a browser: HTTP %d\n%s", c.name, resp.StatusCode, b)
		}
	}
	// A file not there yet: the API's FILE:NOT_FOUND, or the page.
	resp, b := get(t, nil, a.Request["upgraded_dump_url"].(string))
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "FILE:NOT_FOUND") {
		t.Errorf("a file not there yet: HTTP %d %s", resp.StatusCode, b)
	}
	resp, b = get(t, nil, a.Request["upgraded_dump_url"].(string), "Accept", browserAccept)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "<h1>Nothing here</h1>") {
		t.Errorf("a file not there yet, for a browser: HTTP %d %s", resp.StatusCode, b)
	}
	// The right key: the page, for anyone (as before).
	for _, accept := range []string{"", browserAccept} {
		if resp, _ := get(t, nil, status, "Accept", accept); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("the status page, Accept %q: HTTP %d", accept, resp.StatusCode)
		}
	}
	noSecretsIn(t, srv.logs.String(), key)
}
