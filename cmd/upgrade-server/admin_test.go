package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

func adminDo(t *testing.T, method, u, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestAdminAPIAndCLI(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_DATA_DIR":     data,
		"UPGRADE_ADMIN_TOKEN":  "s3cret-token",
		"UPGRADE_WORKERS":      "0",
	})
	base, tok := s.url, "s3cret-token"
	if code, _ := adminDo(t, "GET", base+"/admin/v1/requests", "wrong", nil); code != 401 {
		t.Fatalf("wrong token: HTTP %d", code)
	}
	if code, _ := adminDo(t, "GET", base+"/admin/v1/requests", "", nil); code != 401 {
		t.Fatalf("no token: HTTP %d", code)
	}
	a := scenarioFree(t, base)
	b := scenarioFree(t, base)
	call(t, base, "status", url.Values{"request": {"1"}, "key": {"wrong"}}) // a failure for the journal

	code, list := adminDo(t, "GET", base+"/admin/v1/requests", tok, nil)
	reqs, _ := list["requests"].([]any)
	if code != 200 || len(reqs) != 2 {
		t.Fatalf("list: HTTP %d %v", code, list)
	}
	newest := reqs[0].(map[string]any)
	if newest["upload_sha256"] == nil || newest["upload_size"].(float64) != 17 || newest["record"].(map[string]any)["state"] != "draft" {
		t.Fatalf("list entry: %v", newest)
	}
	code, one := adminDo(t, "GET", base+"/admin/v1/requests/"+a.Get("request"), tok, nil)
	if code != 200 || len(one["events"].([]any)) == 0 {
		t.Fatalf("show: HTTP %d %v", code, one)
	}
	// Force a state; the v1 API follows.
	if code, _ := adminDo(t, "POST", base+"/admin/v1/requests/"+a.Get("request")+"/state", tok,
		map[string]string{"state": "testing"}); code != 200 {
		t.Fatalf("force: HTTP %d", code)
	}
	if k := call(t, base, "skip_test", a); len(k.Failures) != 0 || k.Request["state"] != "delivered" {
		t.Fatalf("skip_test after force: %+v", k)
	}
	if code, _ := adminDo(t, "POST", base+"/admin/v1/requests/"+a.Get("request")+"/state", tok,
		map[string]string{"state": "bogus"}); code != 400 {
		t.Fatalf("bad state: HTTP %d", code)
	}
	// A scenario set per request.
	if code, out := adminDo(t, "PUT", base+"/admin/v1/requests/"+b.Get("request")+"/scenario", tok,
		map[string]string{"scenario": "fail=set by the suite"}); code != 200 || out["scenario"] != "scenario:fail=set by the suite" {
		t.Fatalf("scenario: HTTP %d %v", code, out)
	}
	// The journal saw the calls, with their failures.
	code, j := adminDo(t, "GET", base+"/admin/v1/journal?limit=50", tok, nil)
	calls := j["calls"].([]any)
	if code != 200 || len(calls) != 6 || calls[0].(map[string]any)["method"] != "skip_test" ||
		calls[1].(map[string]any)["method"] != "status" || fmt.Sprint(calls[1].(map[string]any)["failures"]) != "[REQUEST:NOT_FOUND]" {
		t.Fatalf("journal: HTTP %d %v", code, calls)
	}
	// The CLI front.
	var out, errb bytes.Buffer
	if err := runAdmin(t.Context(), []string{"upgrade-server", "admin", "--url", base, "--token", tok, "list", "pending"},
		func(string) string { return "" }, &out, &errb); err != nil || !strings.Contains(out.String(), `"requests"`) {
		t.Fatalf("cli list: %v %s %s", err, out.String(), errb.String())
	}
	out.Reset()
	if err := runAdmin(t.Context(), []string{"upgrade-server", "admin", "delete", b.Get("request")},
		func(k string) string {
			return map[string]string{"UPGRADE_ADMIN_URL": base, "UPGRADE_ADMIN_TOKEN": tok}[k]
		}, &out, &errb); err != nil {
		t.Fatalf("cli delete: %v %s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "requests", b.Get("request"))); !os.IsNotExist(err) {
		t.Fatalf("delete left the files: %v", err)
	}
	if st := call(t, base, "status", b); len(st.Failures) != 1 || st.Failures[0].Reason != "REQUEST:NOT_FOUND" {
		t.Fatalf("deleted request still answers: %+v", st)
	}
	if err := runAdmin(t.Context(), []string{"upgrade-server", "admin", "--url", base, "--token", "nope", "reset"},
		func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("a wrong token reset the server")
	}
	if code, out := adminDo(t, "POST", base+"/admin/v1/reset", tok, nil); code != 200 || len(out["deleted"].([]any)) != 1 {
		t.Fatalf("reset: HTTP %d %v", code, out)
	}
	// Metrics.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`upgrade_api_calls_total{method="create",outcome="ok"} 2`,
		`upgrade_api_calls_total{method="status",outcome="REQUEST:NOT_FOUND"}`, `upgrade_transfer_bytes_total{direction="up",protocol="http"} 34`,
		"upgrade_queue_depth 0", "upgrade_processing 0"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// scenarioFree creates a plain request and uploads 17 bytes.
func scenarioFree(t *testing.T, base string) url.Values {
	t.Helper()
	a := call(t, base, "create", url.Values{"contract": {"M1"}, "aim": {"test"}, "target": {"16.0"},
		"email": {"qa@example.com"}, "filename": {"db.dump"}})
	id := url.Values{"request": {fmt.Sprint(a.Request["id"])}, "key": {a.Request["key"].(string)}}
	req, _ := http.NewRequest("PUT", base+"/database/v1/upload?"+id.Encode(), strings.NewReader("seventeen bytes!!"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return id
}

// TestAdminDisabledWithoutToken: no token, no admin API.
func TestAdminDisabledWithoutToken(t *testing.T) {
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": t.TempDir(), "UPGRADE_WORKERS": "0",
	})
	if code, _ := adminDo(t, "GET", s.url+"/admin/v1/requests", "anything", nil); code != 404 {
		t.Fatalf("admin without a token configured: HTTP %d", code)
	}
}

// TestParallelSuitesAreIsolated: two suites on one server each see only
// their own requests (ids and keys), even when they try the other's ids.
func TestParallelSuitesAreIsolated(t *testing.T) {
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": t.TempDir(),
	})
	var wg sync.WaitGroup
	ids := make([][]url.Values, 2)
	for suite := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				ids[suite] = append(ids[suite], scenarioRequest(t, s.url, "scenario:duration=0"))
			}
		}()
	}
	wg.Wait()
	for suite := range 2 {
		other := ids[1-suite]
		for i, id := range ids[suite] {
			waitState(t, s.url, id, "done")
			cross := url.Values{"request": other[i]["request"], "key": id["key"]}
			if st := call(t, s.url, "status", cross); len(st.Failures) != 1 || st.Failures[0].Reason != "REQUEST:NOT_FOUND" {
				t.Fatalf("suite %d read suite %d's request with its own key: %+v", suite, 1-suite, st)
			}
		}
	}
}

// TestExportImport: a suite starts from a known world.
func TestExportImport(t *testing.T) {
	env := map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": t.TempDir(), "UPGRADE_WORKERS": "0",
		"UPGRADE_ADMIN_TOKEN": "tok",
	}
	s := startServer(t, env)
	base := s.url
	a := scenarioFree(t, base)
	grant(t, base, a)
	b := scenarioFreeNoUpload(t, base)
	before := call(t, base, "status", a)
	cli := func(args ...string) error {
		return runAdmin(t.Context(), append([]string{"upgrade-server", "admin", "--url", base, "--token", "tok"}, args...),
			func(string) string { return "" }, io.Discard, io.Discard)
	}
	export := filepath.Join(t.TempDir(), "world.tar.gz")
	if err := cli("export", export); err != nil {
		t.Fatal(err)
	}
	if err := cli("reset"); err != nil {
		t.Fatal(err)
	}
	if st := call(t, base, "status", a); len(st.Failures) != 1 {
		t.Fatal("reset kept the request")
	}
	// A damaged export changes nothing.
	if err := os.WriteFile(export+".bad", []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cli("import", export+".bad"); err == nil {
		t.Fatal("a damaged export was imported")
	}
	if err := cli("import", export); err != nil {
		t.Fatal(err)
	}
	after := call(t, base, "status", a)
	if len(after.Failures) != 0 || fmt.Sprint(after.Request) != fmt.Sprint(before.Request) {
		t.Fatalf("after import:\n%v\nbefore:\n%v", after.Request, before.Request)
	}
	if st := call(t, base, "status", b); len(st.Failures) != 0 || st.Request["state"] != "draft" {
		t.Fatalf("second request: %+v", st)
	}
	resp, err := http.Get(after.Request["original_dump_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "seventeen bytes!!" {
		t.Fatalf("imported upload: %q", body)
	}
	c := call(t, base, "create", url.Values{"contract": {"M1"}, "aim": {"test"}, "target": {"16.0"},
		"email": {"qa@example.com"}, "filename": {"db.dump"}})
	if c.Request["id"] != float64(3) {
		t.Fatalf("the next id after import is %v", c.Request["id"])
	}
	// --keep refuses ids that exist, changing nothing.
	if err := cli("import", export, "--keep"); err == nil {
		t.Fatal("importing over existing ids with --keep succeeded")
	}
}
