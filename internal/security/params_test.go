package security_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// createParams are valid create parameters.
func createParams() url.Values {
	return url.Values{"contract": {"M-security"}, "email": {"attacker@example.com"},
		"target": {"16.0"}, "aim": {"test"}, "filename": {"db.dump"}}
}

// TestTextParameters: NUL, invalid UTF-8, control and format characters and
// oversized values in any text parameter are validation failures, never
// SERVER:ERROR from PostgreSQL, and nothing is stored.
func TestTextParameters(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	bad := []struct {
		name, value string
	}{
		{"NUL", "M\x00123"},
		{"invalid UTF-8", "M\xff\xfe123"},
		{"line break", "M1\nM2"},
		{"right-to-left override", "M\u202e321"},
		{"zero-width space", "M\u200b1"},
	}
	for _, param := range []string{"contract", "email", "target", "aim", "timezone"} {
		for _, b := range bad {
			t.Run(param+"/"+b.name, func(t *testing.T) {
				p := createParams()
				p.Set(param, b.value)
				a := c.call("create", p)
				wantReason := "PARAM:INVALID"
				if param == "timezone" {
					wantReason = "TIMEZONE:INVALID"
				}
				if len(a.Failures) != 1 || a.Failures[0].Reason != wantReason {
					t.Fatalf("create with %s in %s: %+v", b.name, param, a.Failures)
				}
				if wantReason == "PARAM:INVALID" && a.Failures[0].Param != param {
					t.Fatalf("the failure does not name %s: %+v", param, a.Failures[0])
				}
				if a.Request.ID != 0 {
					t.Fatalf("a request was stored: %+v", a.Request)
				}
			})
		}
	}
	for _, b := range append(bad, struct{ name, value string }{"left-to-right mark", "db\u200e.dump"},
		struct{ name, value string }{"pop directional isolate", "db\u2069.dump"},
		struct{ name, value string }{"arabic letter mark", "db\u061c.dump"}) {
		t.Run("filename/"+b.name, func(t *testing.T) {
			p := createParams()
			p.Set("filename", b.value)
			a := c.call("create", p)
			if len(a.Failures) != 1 || a.Failures[0].Reason != "FILENAME:INVALID" {
				t.Fatalf("create with %s in filename: %+v", b.name, a.Failures)
			}
			if strings.ContainsAny(a.Failures[0].Message, "\u202e\u200e\u2069\u061c\x00") {
				t.Fatalf("the failure echoes the character: %q", a.Failures[0].Message)
			}
		})
	}
	// A 900 KB contract fits the parameter limit but not the contract's.
	p := createParams()
	p.Set("contract", strings.Repeat("M", 900<<10))
	if a := c.call("create", p); len(a.Failures) != 1 || a.Failures[0].Reason != "PARAM:INVALID" ||
		a.Failures[0].Param != "contract" || len(a.Failures[0].Message) > 200 {
		t.Fatalf("a 900 KB contract: %+v", a.Failures)
	}
	for param, max := range map[string]int{"contract": 256, "email": 254, "target": 32, "filename": 255} {
		p := createParams()
		v := strings.Repeat("x", max+1)
		if param == "email" {
			v = strings.Repeat("x", max-11) + "@example.com"
		}
		p.Set(param, v)
		if a := c.call("create", p); len(a.Failures) == 0 {
			t.Errorf("%s of %d bytes was accepted", param, len(v))
		}
	}
	// The key: the same rules, before any lookup.
	r := c.create("db.dump")
	for _, b := range bad {
		a := c.call("status", url.Values{"request": {fmt.Sprint(r.ID)}, "key": {r.Key + b.value}})
		if len(a.Failures) != 1 || a.Failures[0].Reason != "PARAM:INVALID" || a.Failures[0].Param != "key" {
			t.Errorf("key with %s: %+v", b.name, a.Failures)
		}
	}
	if a := c.call("status", url.Values{"request": {fmt.Sprint(r.ID)}, "key": {strings.Repeat("k", 900<<10)}}); len(a.Failures) != 1 ||
		a.Failures[0].Reason != "PARAM:INVALID" {
		t.Errorf("a 900 KB key: %+v", a.Failures)
	}
	// ssh_keys lines that are not clean text.
	for _, b := range bad[:2] {
		p := auth(r)
		p.Set("ssh_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me"+b.value)
		if a := c.call("request_sftp_access", p); len(a.Failures) != 1 || a.Failures[0].Reason != "SSH_KEYS:INVALID" {
			t.Errorf("ssh_keys with %s: %+v", b.name, a.Failures)
		}
	}
}

// TestRequestIDHasOneForm: the request parameter is a canonical decimal.
func TestRequestIDHasOneForm(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := c.create("db.dump")
	for _, id := range []string{"+" + fmt.Sprint(r.ID), "0" + fmt.Sprint(r.ID), " " + fmt.Sprint(r.ID), fmt.Sprint(r.ID) + ".0"} {
		a := c.call("status", url.Values{"request": {id}, "key": {r.Key}})
		if len(a.Failures) != 1 || a.Failures[0].Reason != "PARAM:INVALID" || a.Failures[0].Param != "request" {
			t.Errorf("request=%q: %+v", id, a.Failures)
		}
	}
}

// TestImportedFileNameIsNeverShown: a file name with direction controls
// that reached the database some other way (an export edited by hand) is
// never shown as it is: not in Content-Disposition, the record, the SFTP
// shared file or the status page.
func TestImportedFileNameIsNeverShown(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := c.create("invoice.pdf")
	if a := c.upload(r, strings.NewReader("PGDMP not really")); len(a.Failures) > 0 {
		t.Fatalf("upload: %+v", a.Failures)
	}
	const spoofed = "invoice\u202efdp.dump" // shows as "invoicepmud.pdf"
	c.rewriteFilename(r.ID, spoofed)

	st := c.call("status", auth(r))
	if len(st.Failures) > 0 {
		t.Fatalf("status: %+v", st.Failures)
	}
	resp, err := http.Get(st.Request.OriginalDumpURL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cd := resp.Header.Get("Content-Disposition")
	_, params, err := mime.ParseMediaType(cd)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP %d, Content-Disposition %q: %v", resp.StatusCode, cd, err)
	}
	if strings.Contains(params["filename"], "\u202e") || strings.Contains(strings.ToUpper(cd), "%E2%80%AE") {
		t.Fatalf("Content-Disposition carries the override: %q", cd)
	}
	var raw struct {
		Request map[string]any `json:"request"`
	}
	resp, err = http.Get(c.srv.URL + "/database/v1/status?" + auth(r).Encode())
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if name, _ := raw.Request["filename"].(string); strings.Contains(name, "\u202e") || name == "" {
		t.Fatalf("the record shows %q", name)
	}
	p := auth(r)
	p.Set("ssh_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me")
	resp, err = http.PostForm(c.srv.URL+"/database/v1/request_sftp_access", p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(b, []byte("\u202e")) || bytes.Contains(b, []byte(`\u202e`)) || !bytes.Contains(b, []byte("shared_file")) {
		t.Fatalf("request_sftp_access shows the override: %s", b)
	}
	resp, err = http.Get(st.Request.StatusURL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(b, []byte("\u202e")) || bytes.Contains(b, []byte("&#8238;")) {
		t.Fatal("the status page shows the override")
	}
}

// rewriteFilename exports the server's requests, sets one request's
// filename and imports the result, as an operator editing an export would.
func (c *client) rewriteFilename(id int64, name string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.srv.URL+"/admin/v1/export", nil)
	req.Header.Set("Authorization", "Bearer "+c.srv.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	gz, err := gzip.NewReader(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	tw := tar.NewWriter(gw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			c.t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Name == "fixtures.json" {
			var fixtures []map[string]any
			if err := json.Unmarshal(b, &fixtures); err != nil {
				c.t.Fatal(err)
			}
			for _, f := range fixtures {
				row := f["request"].(map[string]any)
				if row["id"] == float64(id) {
					row["filename"] = name
				}
			}
			b, _ = json.Marshal(fixtures)
			h.Size = int64(len(b))
		}
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	gw.Close()
	req, _ = http.NewRequest("POST", c.srv.URL+"/admin/v1/import", &out)
	req.Header.Set("Authorization", "Bearer "+c.srv.AdminToken)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 200 {
		c.t.Fatalf("import: HTTP %d %s", resp2.StatusCode, b)
	}
}

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
