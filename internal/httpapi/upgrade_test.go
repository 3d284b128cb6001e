package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestOneCallUpgrade: /database/v1/upgrade creates the request from the
// query string, stores the body as its upload and queues it; bad
// parameters create nothing; an empty body is refused before create.
func TestOneCallUpgrade(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	call := func(method string, q map[string]string, body []byte) answer {
		t.Helper()
		r, _ := http.NewRequest(method, e.srv.URL+"/database/v1/upgrade?"+form(q).Encode(), bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/octet-stream")
		return e.do(r)
	}
	sql := []byte("--\n-- PostgreSQL database dump\n--\nCREATE TABLE t (id integer);\n")
	a := call("POST", with(createParams, "filename", "\x00"), sql)
	noFailures(t, "upgrade", a)
	if a.Request["state"] != "pending" || a.Request["filename"] != "database.sql" || a.Request["filesize"] == nil {
		t.Fatalf("after the one-call upgrade: %s", a.raw)
	}
	id := int64(a.Request["id"].(float64))
	if got := e.stored(id); !bytes.Equal(got, sql) {
		t.Fatalf("stored upload: %q", got)
	}
	// The request answers v1's status with its key, as any other.
	st := e.get("status", map[string]string{"request": fmt.Sprint(id), "key": a.Request["key"].(string)})
	noFailures(t, "status", st)

	var before int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM requests`).Scan(&before)
	if a := call("PUT", with(createParams, "target", "99.0"), sql); !slices.Equal(a.reasons(), []string{"TARGET:INVALID"}) || a.Request != nil {
		t.Fatalf("bad target: %s", a.raw)
	}
	if a := call("POST", createParams, nil); !slices.Equal(a.reasons(), []string{"UPLOAD:EMPTY"}) {
		t.Fatalf("empty body: %s", a.raw)
	}
	var after int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM requests`).Scan(&after)
	if after != before {
		t.Fatalf("refused calls created %d requests", after-before)
	}
	if r, _ := http.Get(e.srv.URL + "/database/v1/upgrade?" + form(createParams).Encode()); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", r.StatusCode)
	} else if !strings.Contains(r.Header.Get("Content-Type"), "json") {
		t.Fatalf("GET answers %s", r.Header.Get("Content-Type"))
	}
}
