package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func (e *env) fetch(method, url string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	r, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestArtifactURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	st := e.get("status", id).Request
	urls := map[string]string{}
	for _, k := range []string{"notes_url", "original_sql_url", "original_dump_url", "upgraded_sql_url", "upgraded_dump_url", "modules_url"} {
		urls[k] = st[k].(string)
	}
	// Before the files exist: 404 with a JSON failure.
	for k, u := range urls {
		resp, b := e.fetch("GET", u)
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Contains(b, []byte("FILE:NOT_FOUND")) {
			t.Fatalf("%s before: HTTP %d %s", k, resp.StatusCode, b)
		}
	}
	dump := bytes.Repeat([]byte("0123456789"), 100000)
	noFailures(t, "upload", e.upload("PUT", id, bytes.NewReader(dump)))
	reqID := mustID(t, id)
	upgraded := []byte("upgraded dump bytes")
	e.write(reqID, files.UpgradedArchive, upgraded)
	e.write(reqID, files.Notes, []byte("<h1>notes</h1>"))

	resp, b := e.fetch("GET", urls["original_dump_url"])
	if resp.StatusCode != 200 || !bytes.Equal(b, dump) ||
		resp.Header.Get("Content-Disposition") != "attachment; filename=db_name.dump" {
		t.Fatalf("original archive: HTTP %d %v (%d bytes)", resp.StatusCode, resp.Header, len(b))
	}
	etag := resp.Header.Get("ETag")
	// Range, and If-Range with the current and a stale ETag.
	resp, b = e.fetch("GET", urls["original_dump_url"], "Range", "bytes=10-19")
	if resp.StatusCode != 206 || string(b) != "0123456789" || resp.Header.Get("Content-Range") != "bytes 10-19/1000000" {
		t.Fatalf("range: HTTP %d %q", resp.StatusCode, b)
	}
	resp, b = e.fetch("GET", urls["original_dump_url"], "Range", "bytes=999990-", "If-Range", etag)
	if resp.StatusCode != 206 || len(b) != 10 {
		t.Fatalf("If-Range current: HTTP %d", resp.StatusCode)
	}
	resp, b = e.fetch("GET", urls["original_dump_url"], "Range", "bytes=999990-", "If-Range", `"stale"`)
	if resp.StatusCode != 200 || len(b) != len(dump) {
		t.Fatalf("If-Range stale: HTTP %d", resp.StatusCode)
	}
	resp, _ = e.fetch("GET", urls["original_dump_url"], "If-None-Match", etag)
	if resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: HTTP %d", resp.StatusCode)
	}
	resp, b = e.fetch("HEAD", urls["upgraded_dump_url"])
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(upgraded)) ||
		resp.Header.Get("Content-Disposition") != "attachment; filename=upgraded_db_name.dump" {
		t.Fatalf("HEAD upgraded: HTTP %d %v", resp.StatusCode, resp.Header)
	}
	resp, b = e.fetch("GET", urls["notes_url"])
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "inline") {
		t.Fatalf("notes: HTTP %d %v", resp.StatusCode, resp.Header)
	}

	// A wrong key, a wrong region and an unknown id look alike.
	wrongKey := strings.Replace(urls["original_dump_url"], id["key"], "Aw7pItGVKFuZ_FOR3U8VFQ==", 1)
	wrongRegion := strings.Replace(urls["original_dump_url"], "/eu1/", "/us1/", 1)
	unknown := strings.Replace(urls["original_dump_url"], "/"+id["request"]+"/", "/987654/", 1)
	var bodies [][]byte
	for _, u := range []string{wrongKey, wrongRegion, unknown} {
		resp, b := e.fetch("GET", u)
		if resp.StatusCode != 404 {
			t.Fatalf("%s: HTTP %d", u, resp.StatusCode)
		}
		bodies = append(bodies, b)
	}
	if !bytes.Equal(bodies[0], bodies[1]) || !bytes.Equal(bodies[0], bodies[2]) || !bytes.Contains(bodies[0], []byte("REQUEST:NOT_FOUND")) {
		t.Fatalf("wrong key, region and id differ:\n%s\n%s\n%s", bodies[0], bodies[1], bodies[2])
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, b := e.fetch("GET", e.srv.URL+p)
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"ok"`)) {
			t.Fatalf("%s: HTTP %d %s", p, resp.StatusCode, b)
		}
	}
	e.pool.Close() // the database is gone
	resp, _ := e.fetch("GET", e.srv.URL+"/readyz")
	if resp.StatusCode != 503 {
		t.Fatalf("readyz without a database: HTTP %d", resp.StatusCode)
	}
}

// TestStatusKeyOrder reads the raw answer: the 28 documented keys come in
// the documented order (then migrated_sql_url).
func TestStatusKeyOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	a := e.get("status", id)
	dec := json.NewDecoder(bytes.NewReader(a.raw))
	var keys []string
	depth := 0
	inRequest := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			if depth == 1 && v == "request" {
				inRequest = true
				continue
			}
			if inRequest && depth == 2 {
				keys = append(keys, v)
				// skip the value
				var raw json.RawMessage
				dec.Decode(&raw)
			}
		}
	}
	want := []string{"id", "key", "email", "target", "aim", "filename", "timezone", "state", "issue_stage", "issue",
		"status_url", "notes_url", "original_sql_url", "original_dump_url", "upgraded_sql_url", "upgraded_dump_url",
		"modules_url", "filesize", "database_uuid", "created_at", "estimated_time", "processed_at", "elapsed",
		"filestore", "customer_message", "database_version", "postgresql", "compressions", "migrated_sql_url"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys:\n got %v\nwant %v", keys, want)
	}
	if _, ok := a.Request["id"].(float64); !ok {
		t.Fatalf("id is not a number: %T", a.Request["id"])
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`).MatchString(a.Request["created_at"].(string)) {
		t.Fatalf("created_at = %v", a.Request["created_at"])
	}
	if k := a.Request["key"].(string); !regexp.MustCompile(`^[A-Za-z0-9_-]{22}==$`).MatchString(k) {
		t.Fatalf("key %q is not 16 bytes of URL-safe base64", k)
	}
}

// TestSFTPUploadIsAnUpload: a shared file being written in place (as the
// SFTP daemon does) shows its live size; process refuses while the writer
// holds the lease and, once the writer has recorded it, queues it with one
// store call.
func TestSFTPUploadIsAnUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	reqID := mustID(t, id)
	noFailures(t, "sftp access", e.get("request_sftp_access", with(id, "ssh_keys", publicKey(t))))
	if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"UPLOAD:MISSING"}) {
		t.Fatalf("process with an empty shared file: %s", a.raw)
	}
	ctx := context.Background()
	if _, err := e.store.TakeUpload(ctx, reqID, "sftp", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	dump := bytes.Repeat([]byte("sftp"), 300000)
	staged, err := e.files.StagePath(reqID, files.Upload) // where the SFTP daemon writes
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(staged, dump, 0o600)
	if a := e.get("status", id); a.Request["filesize"] != "1.14 Mb" {
		t.Fatalf("live size: %v", a.Request["filesize"])
	}
	if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"UPLOAD:IN_PROGRESS"}) {
		t.Fatalf("process during an SFTP write: %s", a.raw)
	}
	// A writer that ends without recording (a dropped connection) leaves
	// no complete upload: the bytes alone are not one.
	e.store.AbortUpload(ctx, reqID, "sftp")
	if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"UPLOAD:MISSING"}) {
		t.Fatalf("process after an unrecorded SFTP write: %s", a.raw)
	}
	if _, err := e.store.TakeUpload(ctx, reqID, "sftp2", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	name := files.NewUploadName()
	got, err := e.files.CommitFile(ctx, reqID, name, staged, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.CompleteUpload(ctx, reqID, "sftp2", store.Upload{Name: string(name), Size: got.Size, SHA256: got.SHA256}); err != nil {
		t.Fatal(err)
	}
	a := e.get("process", id)
	noFailures(t, "process", a)
	r, _ := e.store.Request(ctx, reqID)
	if r.State != store.StateQueued || *r.UploadSize != int64(len(dump)) {
		t.Fatalf("after process: %+v", r)
	}
}
