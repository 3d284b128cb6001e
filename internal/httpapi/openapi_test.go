package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// TestOpenAPIMatchesRoutes keeps openapi.json true: every route the server
// has is described, every described route exists, the record's keys and
// the failure reasons are the code's.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(slog.New(slog.NewTextHandler(io.Discard, nil)), Config{AdminToken: "x", Admin: (*store.Store)(nil),
		Files: (*files.Store)(nil), Metrics: metrics.New(nil)})
	var routes []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route != "/" && strings.HasSuffix(route, "/") {
			route = strings.TrimSuffix(route, "/")
		}
		routes = append(routes, strings.ToLower(method)+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Routes of status_url that another front end serves (internal/web,
	// mounted by internal/app): described here, not walked.
	pages := []string{"get /database/{region}/{id}/{key}/status"}
	var described []string
	for path, ops := range doc.Paths {
		for m := range ops {
			if !slices.Contains(pages, m+" "+path) {
				described = append(described, m+" "+path)
			}
		}
	}
	if len(routes) < 40 {
		t.Fatalf("walked only %d routes: %v", len(routes), routes)
	}
	sort.Strings(routes)
	sort.Strings(described)
	for _, r := range routes {
		if !slices.Contains(described, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range described {
		if !slices.Contains(routes, d) {
			t.Errorf("openapi.json describes %s, which the server does not have", d)
		}
	}
	var keys []string
	for _, m := range regexp.MustCompile(`json:"([a-z_]+)"`).FindAllStringSubmatch(recordSource(t), -1) {
		keys = append(keys, m[1])
	}
	if got := doc.Components.Schemas["Request"].Required; !slices.Equal(got, keys) {
		t.Errorf("Request keys in openapi.json %v, in the code %v", got, keys)
	}
	var reasons struct {
		Enum []string `json:"enum"`
	}
	json.Unmarshal(doc.Components.Schemas["Failure"].Properties["reason"], &reasons)
	src, err := reasonSources()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"([A-Z_]+:[A-Z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		if !slices.Contains(reasons.Enum, m[1]) {
			t.Errorf("failure reason %s is not in openapi.json", m[1])
		}
	}
}

func recordSource(t *testing.T) string {
	s, err := readFile("record.go")
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitN(strings.SplitN(s, "type wireRequest struct", 2)[1], "}", 2)[0]
}
