package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/httpapi"
)

// apiAccepts are Accept headers of API clients: none (curl, pycurl, Odoo's
// client), curl's */*, and those of JSON clients. None names text/html.
var apiAccepts = []string{"", "*/*", "application/json", "application/json, text/plain, */*"}

// TestNotFoundForAPIClients: API clients get the JSON 404s they always
// got, byte for byte, whatever page a browser would get instead.
func TestNotFoundForAPIClients(t *testing.T) {
	t.Parallel()
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<p>not here</p>")
	})
	e := newEnv(t, func(o *httpapi.Config) { o.BrowserNotFound = page })
	id := e.create()
	st := e.get("status", id).Request
	wrongKey := strings.Replace(st["original_dump_url"].(string), id["key"], "Aw7pItGVKFuZ_FOR3U8VFQ==", 1)
	cases := []struct{ url, golden string }{
		{e.srv.URL + "/nope", "route_not_found.golden"},
		{e.srv.URL + "/database/v1/nope?request=1&key=k", "route_not_found_v1.golden"},
		{wrongKey, "request_not_found.golden"},
		{strings.Replace(wrongKey, "/original/archive", "/upgraded/notes", 1), "request_not_found.golden"},
	}
	for _, c := range cases {
		for _, accept := range apiAccepts {
			t.Run(fmt.Sprintf("%s/%q", c.golden, accept), func(t *testing.T) {
				var hdr []string
				if accept != "" {
					hdr = []string{"Accept", accept}
				}
				resp, b := e.fetch("GET", c.url, hdr...)
				if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				httpapi.Golden(t, c.golden, b)
			})
		}
	}

	// Browsers get the page instead: for an unknown path, a wrong key on a
	// file URL, and a file not there yet.
	browser := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	for _, u := range []string{e.srv.URL + "/nope", wrongKey, st["upgraded_dump_url"].(string), st["notes_url"].(string)} {
		resp, b := e.fetch("GET", u, "Accept", browser)
		if resp.StatusCode != http.StatusNotFound || string(b) != "<p>not here</p>" {
			t.Errorf("%s for a browser: HTTP %d %q", u, resp.StatusCode, b)
		}
	}
	// Without a page, browsers get the JSON too.
	plain := newEnv(t)
	resp, b := plain.fetch("GET", plain.srv.URL+"/nope", "Accept", browser)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "ROUTE:NOT_FOUND") {
		t.Errorf("no page: HTTP %d %s", resp.StatusCode, b)
	}
}
