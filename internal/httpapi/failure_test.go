package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func TestCreateFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *httpapi.Config) {
		o.Rules.ContractValidFunc = func(c string) bool { return c == "M123456-abcdef" }
	})
	tests := []struct {
		name   string
		params map[string]string
		want   []failure
	}{
		{"documented sample", with(createParams, "target", "5.0", "contract", "M123456-abcxyz"), []failure{
			{Reason: "TARGET:INVALID", Message: `Invalid value "5.0"`, Value: ptr("5.0"), Expected: targets},
			{Reason: "CONTRACT:NOT_FOUND", Message: "Can not find contract M123456-abcxyz", Code: "M123456-abcxyz"},
		}},
		{"everything missing", map[string]string{}, []failure{
			{Reason: "PARAM:MISSING", Message: `Missing parameter "target"`, Param: "target"},
			{Reason: "PARAM:MISSING", Message: `Missing parameter "contract"`, Param: "contract"},
			{Reason: "PARAM:MISSING", Message: `Missing parameter "email"`, Param: "email"},
			{Reason: "PARAM:MISSING", Message: `Missing parameter "aim"`, Param: "aim"},
			{Reason: "PARAM:MISSING", Message: `Missing parameter "filename"`, Param: "filename"},
		}},
		{"bad aim, e-mail, file name and time zone",
			with(createParams, "aim", "prod", "email", "john@", "filename", "../etc/passwd", "timezone", "Mars/Olympus"), []failure{
				{Reason: "EMAIL:INVALID", Message: `Invalid e-mail address "john@"`, Value: ptr("john@")},
				{Reason: "AIM:INVALID", Message: `Invalid value "prod"`, Value: ptr("prod"), Expected: []string{"test", "production"}},
				{Reason: "FILENAME:INVALID", Message: "A file name is one plain name: no slash or backslash, no control or format character " +
					"(such as Unicode direction marks), not . or .., at most 255 bytes", Value: ptr("../etc/passwd")},
				{Reason: "TIMEZONE:INVALID", Message: `Unknown time zone "Mars/Olympus" (use an IANA name such as Europe/Brussels)`, Value: ptr("Mars/Olympus")},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.get("create", tt.params)
			if diff := diffJSON(tt.want, a.Failures); diff != "" {
				t.Fatalf("failures: %s\nraw: %s", diff, a.raw)
			}
			if a.Request != nil {
				t.Fatalf("a failed create returned a request: %s", a.raw)
			}
		})
	}
	// A valid time zone is kept.
	a := e.get("create", with(createParams, "timezone", "Europe/Brussels"))
	noFailures(t, "create with timezone", a)
	if a.Request["timezone"] != "Europe/Brussels" {
		t.Fatalf("timezone = %v", a.Request["timezone"])
	}
}

func ptr[T any](v T) *T { return &v }

func TestAuthenticationFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	for _, method := range []string{"status", "process", "skip_test", "request_sftp_access", "upload"} {
		t.Run(method, func(t *testing.T) {
			wrongKey := e.get(method, with(id, "key", "Aw7pItGVKFuZ_FOR3U8VFQ=="))
			unknownID := e.get(method, with(id, "request", "999999"))
			if !slices.Equal(wrongKey.reasons(), []string{"REQUEST:NOT_FOUND"}) || !bytes.Equal(wrongKey.raw, unknownID.raw) {
				t.Fatalf("a wrong key must look exactly like an unknown id:\n%s\n%s", wrongKey.raw, unknownID.raw)
			}
			missing := e.get(method, map[string]string{})
			if diff := diffJSON([]failure{
				{Reason: "PARAM:MISSING", Message: `Missing parameter "request"`, Param: "request"},
				{Reason: "PARAM:MISSING", Message: `Missing parameter "key"`, Param: "key"},
			}, missing.Failures); diff != "" {
				t.Fatal(diff)
			}
			bad := e.get(method, with(id, "request", "12abc"))
			if !slices.Equal(bad.reasons(), []string{"PARAM:INVALID"}) || bad.Failures[0].Param != "request" {
				t.Fatalf("malformed id: %s", bad.raw)
			}
		})
	}
}

func TestParamsFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	big, _ := http.NewRequest("POST", e.srv.URL+"/database/v1/create", strings.NewReader("filename="+strings.Repeat("x", 2<<20)))
	big.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a := e.do(big); !slices.Equal(a.reasons(), []string{"PARAMS:TOO_LARGE"}) {
		t.Fatalf("oversized parameters: %s", a.raw)
	}
	bad, _ := http.NewRequest("POST", e.srv.URL+"/database/v1/create", strings.NewReader("--x\r\ngarbage"))
	bad.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	if a := e.do(bad); !slices.Equal(a.reasons(), []string{"PARAMS:MALFORMED"}) {
		t.Fatalf("malformed multipart: %s", a.raw)
	}
}

func TestStateGuards(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	keys := publicKey(t)

	if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"UPLOAD:MISSING"}) {
		t.Fatalf("process without upload: %s", a.raw)
	}
	if a := e.get("skip_test", id); !slices.Equal(a.reasons(), []string{"STATE:INVALID"}) ||
		*a.Failures[0].Value != "draft" || !slices.Equal(a.Failures[0].Expected, []string{"testing"}) {
		t.Fatalf("skip_test in draft: %s", a.raw)
	}
	noFailures(t, "upload", e.upload("POST", id, strings.NewReader("dump")))
	noFailures(t, "process", e.get("process", id))
	if a := e.get("process", id); len(a.Failures) != 0 || a.Request["state"] != "pending" {
		t.Fatalf("a repeated process must be a no-op: %s", a.raw)
	}
	var queued int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM request_events WHERE request_id = $1 AND message LIKE 'Queued%'`, id["request"]).Scan(&queued)
	if queued != 1 {
		t.Fatalf("queued %d times", queued)
	}
	if a := e.upload("PUT", id, strings.NewReader("late")); !slices.Equal(a.reasons(), []string{"STATE:INVALID"}) ||
		!slices.Equal(a.Failures[0].Expected, []string{"draft"}) || *a.Failures[0].Value != "pending" {
		t.Fatalf("upload after process: %s", a.raw)
	}
	if a := e.get("request_sftp_access", with(id, "ssh_keys", keys)); !slices.Equal(a.reasons(), []string{"STATE:INVALID"}) ||
		!slices.Equal(a.Failures[0].Expected, []string{"draft", "done", "delivered"}) {
		t.Fatalf("sftp access while pending: %s", a.raw)
	}
	for _, s := range []store.State{store.StateProcessing} {
		e.setState(id, s)
		if a := e.get("process", id); len(a.Failures) != 0 || a.Request["state"] != "processing" {
			t.Fatalf("process while processing: %s", a.raw)
		}
	}
	for _, s := range []store.State{store.StateDone, store.StateFailed, store.StateCancelled, store.StateDelivered} {
		e.setState(id, s)
		if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"STATE:INVALID"}) {
			t.Fatalf("process in %s: %s", s, a.raw)
		}
		if a := e.get("skip_test", id); !slices.Equal(a.reasons(), []string{"STATE:INVALID"}) {
			t.Fatalf("skip_test in %s: %s", s, a.raw)
		}
	}
	e.setState(id, store.StateDone)
	noFailures(t, "sftp access when done", e.get("request_sftp_access", with(id, "ssh_keys", keys)))
	e.setState(id, store.StateFailed)
	if a := e.get("status", id); a.Request["state"] != "invalid" {
		t.Fatalf("failed renders as %v", a.Request["state"])
	}
}

func TestSSHKeysFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	key := publicKey(t)
	tests := []struct {
		name, keys, want, msg string
	}{
		{"garbage", "hello world", "SSH_KEYS:INVALID", "ssh_keys line 1: not a public key in authorized_keys format"},
		{"command option", "# ok\n" + `command="/bin/sh" ` + key, "SSH_KEYS:INVALID",
			`ssh_keys line 2: key options such as "command=\"/bin/sh\"" are not allowed; give the bare key`},
		{"only comments", "# nothing\n\n", "SSH_KEYS:EMPTY", "ssh_keys holds no public key"},
		{"empty", "", "SSH_KEYS:EMPTY", "ssh_keys holds no public key"},
		{"dsa", "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAPBXZ6rz+eb0rmzNyg9Bzn0SR4Bf1HN6Zrd9ocgaNT3PP5KpwBaLl2ItkwWq8N8IYi7Ob5LHJgnjfLOvbS2wBKzE/YtvB1lnK7Ctc3eBHAW3jGxUhjPhCVA9FQZnvlnCPIYfMMsbvC9ehuFi6V9AN+OInfu2lWiXfDCKTMDo55uM",
			"SSH_KEYS:INVALID", ""}, // refused as DSA, or as unparsable by newer x/crypto
		{"short rsa", shortRSAKey(t), "SSH_KEYS:INVALID", "ssh_keys line 1: RSA key of 1024 bits is too short (2048 or more)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.call(transports[3], "request_sftp_access", with(id, "ssh_keys", tt.keys))
			if !slices.Equal(a.reasons(), []string{tt.want}) || (tt.msg != "" && a.Failures[0].Message != tt.msg) {
				t.Fatalf("got %s", a.raw)
			}
		})
	}
	if a := e.get("request_sftp_access", id); !slices.Equal(a.reasons(), []string{"PARAM:MISSING"}) {
		t.Fatalf("no ssh_keys: %s", a.raw)
	}
	// Several bad lines give several failures.
	a := e.call(transports[1], "request_sftp_access", with(id, "ssh_keys", "bad one\n"+key+"\nbad two"))
	if !slices.Equal(a.reasons(), []string{"SSH_KEYS:INVALID", "SSH_KEYS:INVALID"}) {
		t.Fatalf("two bad lines: %s", a.raw)
	}
}

func TestUploadFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *httpapi.Config) { o.MaxUploadBytes = 1000 })
	id := e.create()
	if a := e.upload("POST", id, strings.NewReader("")); !slices.Equal(a.reasons(), []string{"UPLOAD:EMPTY"}) {
		t.Fatalf("empty upload: %s", a.raw)
	}
	if a := e.upload("POST", id, strings.NewReader(strings.Repeat("x", 1001))); !slices.Equal(a.reasons(), []string{"UPLOAD:TOO_LARGE"}) {
		t.Fatalf("oversized upload (Content-Length): %s", a.raw)
	}
	// Chunked: the size is only known while streaming.
	if a := e.upload("PUT", id, io.MultiReader(strings.NewReader(strings.Repeat("x", 3000)))); !slices.Equal(a.reasons(), []string{"UPLOAD:TOO_LARGE"}) {
		t.Fatalf("oversized upload (chunked): %s", a.raw)
	}
	if a := e.upload("PUT", id, io.MultiReader(strings.NewReader(""))); !slices.Equal(a.reasons(), []string{"UPLOAD:EMPTY"}) {
		t.Fatalf("empty chunked upload: %s", a.raw)
	}
	r, _ := e.store.Request(context.Background(), mustID(t, id))
	if r.UploadCompletedAt != nil || r.Uploading {
		t.Fatalf("failed uploads left a trace: %+v", r)
	}
	assertNoPartFiles(t, e, r.ID)
}

// TestUploadCutMidBody: a client that disconnects leaves no complete-looking
// file, keeps the earlier upload and leaves the request draft.
func TestUploadCutMidBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	noFailures(t, "first upload", e.upload("POST", id, strings.NewReader("the earlier complete dump")))
	reqID := mustID(t, id)
	before, _ := e.store.Request(context.Background(), reqID)

	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /database/v1/upload?request=%s&key=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		id["request"], id["key"], 10<<20)
	conn.Write(bytes.Repeat([]byte("y"), 3<<20))
	waitFor(t, "the upload to start", func() bool {
		r, _ := e.store.Request(context.Background(), reqID)
		return r.Uploading
	})
	conn.Close()
	waitFor(t, "the lease to be released", func() bool {
		r, _ := e.store.Request(context.Background(), reqID)
		return !r.Uploading
	})
	after, _ := e.store.Request(context.Background(), reqID)
	if after.State != store.StateDraft || *after.UploadSHA256 != *before.UploadSHA256 || *after.UploadSize != 25 {
		t.Fatalf("after the cut: %+v", after)
	}
	if b := e.stored(reqID); string(b) != "the earlier complete dump" {
		t.Fatalf("earlier upload damaged: %q", b)
	}
	waitFor(t, "the partial file to go", func() bool { return len(partFiles(e, reqID)) == 0 })
}

// TestNewUploadTakesOver: a second upload of a request takes it over at
// once; the first ends UPLOAD:INTERRUPTED, says why and keeps nothing;
// process meanwhile answers UPLOAD:IN_PROGRESS.
func TestNewUploadTakesOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	reqID := mustID(t, id)
	pr, pw := io.Pipe()
	first := make(chan answer, 1)
	go func() {
		r, _ := http.NewRequest("PUT", e.srv.URL+"/database/v1/upload?"+form(id).Encode(), pr)
		resp, err := e.srv.Client().Do(r)
		if err != nil {
			first <- answer{raw: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		first <- answer{raw: raw, status: resp.StatusCode}
	}()
	pw.Write(bytes.Repeat([]byte("a"), 1<<20))
	waitFor(t, "the first upload to start", func() bool {
		r, _ := e.store.Request(context.Background(), reqID)
		return r.Uploading
	})
	if a := e.get("process", id); !slices.Equal(a.reasons(), []string{"UPLOAD:IN_PROGRESS"}) {
		t.Fatalf("process during upload: %s", a.raw)
	}
	noFailures(t, "second upload", e.upload("POST", id, strings.NewReader("second")))
	got := <-first
	pw.Close()
	if !bytes.Contains(got.raw, []byte(`"UPLOAD:INTERRUPTED"`)) || !bytes.Contains(got.raw, []byte("newer upload")) {
		t.Fatalf("first upload: %s", got.raw)
	}
	if b := e.stored(reqID); string(b) != "second" {
		t.Fatalf("the upload holds %d bytes, not the second upload", len(b))
	}
	assertNoPartFiles(t, e, reqID)
	noFailures(t, "process", e.get("process", id))
}

// TestUploadDiskFull fills a small tmpfs: the upload fails with
// UPLOAD:NO_SPACE and the earlier upload stays intact.
func TestUploadDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	st, pool := pgtest.NewStore(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	e := newEnvWith(t, st, pool, dir)
	id := e.create()
	small := bytes.Repeat([]byte("s"), 1<<20)
	noFailures(t, "small upload", e.upload("POST", id, bytes.NewReader(small)))
	a := e.upload("POST", id, bytes.NewReader(bytes.Repeat([]byte("L"), 6<<20)))
	if !slices.Equal(a.reasons(), []string{"UPLOAD:NO_SPACE"}) {
		t.Fatalf("upload on a full disk: %s", a.raw)
	}
	reqID := mustID(t, id)
	if b := e.stored(reqID); !bytes.Equal(b, small) {
		t.Fatalf("the earlier upload was damaged (%d bytes)", len(b))
	}
	assertNoPartFiles(t, e, reqID)
	r, _ := st.Request(context.Background(), reqID)
	if *r.UploadSize != 1<<20 || r.Uploading {
		t.Fatalf("after the failed upload: %+v", r)
	}
}

// brokenStore fails every lookup with an error that holds a secret.
type brokenStore struct{ *store.Store }

func (brokenStore) Request(ctx context.Context, id int64) (store.Request, error) {
	return store.Request{}, errors.New("dial tcp: password=hunter2 refused")
}

func TestServerErrorHidesDetails(t *testing.T) {
	t.Parallel()
	st, pool := pgtest.NewStore(t)
	e := newEnvWith(t, brokenStore{st}, pool, t.TempDir())
	a := e.get("status", map[string]string{"request": "1", "key": "k"})
	if !slices.Equal(a.reasons(), []string{"SERVER:ERROR"}) || bytes.Contains(a.raw, []byte("hunter2")) || a.status != 200 {
		t.Fatalf("internal error: HTTP %d %s", a.status, a.raw)
	}
	if !regexp.MustCompile(`reference [0-9a-f]{16}`).MatchString(a.Failures[0].Message) {
		t.Fatalf("no correlation id in %q", a.Failures[0].Message)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
		reason       string
	}{
		{"GET", "/database/v1/nope", 404, "ROUTE:NOT_FOUND"},
		{"DELETE", "/database/v1/status", 405, "METHOD:NOT_ALLOWED"},
		{"PUT", "/database/v1/create", 405, "METHOD:NOT_ALLOWED"},
		{"GET", "/database/eu1/1/k/original/nope", 404, "ROUTE:NOT_FOUND"},
	} {
		r, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
		a := e.do(r)
		if a.status != tc.status || !slices.Equal(a.reasons(), []string{tc.reason}) {
			t.Errorf("%s %s: HTTP %d %s", tc.method, tc.path, a.status, a.raw)
		}
	}
}

// partFiles lists a request's stored files that are neither its current
// upload nor an artifact, and the local part files of unfinished writes.
func partFiles(e *env, id int64) []string {
	r, _ := e.store.Request(context.Background(), id)
	list, _ := e.files.List(context.Background(), id)
	var out []string
	for _, f := range list {
		if strings.HasPrefix(string(f.Name), "upload") && (r.UploadName == nil || string(f.Name) != *r.UploadName) {
			out = append(out, string(f.Name))
		}
	}
	parts, _ := filepath.Glob(filepath.Join(e.root, "requests", strconv.FormatInt(id, 10), ".part-*"))
	return append(out, parts...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
