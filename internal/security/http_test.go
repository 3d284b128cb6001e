package security_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// get fetches a URL and returns its status, a failure reason (for JSON
// answers) and the body.
func get(t *testing.T, u string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a answer
	reason := ""
	if json.Unmarshal(b, &a) == nil && len(a.Failures) > 0 {
		reason = a.Failures[0].Reason
	}
	return resp.StatusCode, reason, b
}

// TestFileURLForms: a file or status URL has one form for its id (the
// decimal without sign or leading zeros), while the key segment is read
// percent-decoded, as any URL segment is.
func TestFileURLForms(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := c.create("db.dump")
	if a := c.upload(r, strings.NewReader("PGDMP some bytes")); len(a.Failures) > 0 {
		t.Fatalf("upload: %+v", a.Failures)
	}
	if !strings.HasSuffix(r.Key, "=") {
		t.Fatalf("key %q has no padding to encode", r.Key)
	}
	st := c.call("status", auth(r)).Request
	for _, u := range []string{st.OriginalDumpURL, st.StatusURL} {
		if code, _, _ := get(t, u); code != 200 {
			t.Fatalf("%s: HTTP %d", u, code)
		}
		encoded := strings.Replace(u, r.Key, strings.ReplaceAll(r.Key, "=", "%3D"), 1)
		if code, _, b := get(t, encoded); code != 200 {
			t.Errorf("key with %%3D: HTTP %d %s", code, b)
		}
		lower := strings.Replace(u, r.Key, strings.ReplaceAll(r.Key, "=", "%3d"), 1)
		if code, _, _ := get(t, lower); code != 200 {
			t.Errorf("key with %%3d: HTTP %d", code)
		}
		id := "/" + jsonID(r) + "/"
		for _, other := range []string{"/+" + jsonID(r) + "/", "/0" + jsonID(r) + "/", "/%20" + jsonID(r) + "/",
			"/%2B" + jsonID(r) + "/", "/" + jsonID(r) + "%20/", "/00" + jsonID(r) + "/"} {
			code, reason, _ := get(t, strings.Replace(u, id, other, 1))
			if code != 404 || reason != "REQUEST:NOT_FOUND" {
				t.Errorf("id written %q: HTTP %d %s", other, code, reason)
			}
		}
	}
}

func jsonID(r record) string {
	b, _ := json.Marshal(r.ID)
	return string(b)
}
