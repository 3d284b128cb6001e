package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func TestMain(m *testing.M) { pgtest.Exit(m) }

var targets = []string{"7.0", "8.0", "9.0", "10.0", "11.0", "12.0", "13.0", "14.0", "15.0", "16.0", "17.0", "18.0", "19.0"}

// env is one API server on a real PostgreSQL schema and a temp data dir.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	store *store.Store
	pool  *pgxpool.Pool
	files *files.Store
	root  string // the data directory (the file store's local folder)
	opts  httpapi.Config
}

func newEnv(t *testing.T, mod ...func(*httpapi.Config)) *env {
	t.Helper()
	st, pool := pgtest.NewStore(t)
	return newEnvWith(t, st, pool, t.TempDir(), mod...)
}

func newEnvWith(t *testing.T, requests httpapi.RequestStore, pool *pgxpool.Pool, dataRoot string, mod ...func(*httpapi.Config)) *env {
	t.Helper()
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: dataRoot})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, files: fs, root: dataRoot}
	if st, ok := requests.(*store.Store); ok {
		e.store = st
	}
	e.opts = httpapi.Config{Requests: requests, Files: fs, Region: "eu1", Rules: input.Rules{Targets: targets},
		SFTP: httpapi.SFTPInfo{Host: "sftp.example.test", Port: 2200}}
	for _, m := range mod {
		m(&e.opts)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var h http.Handler
	e.srv = httptest.NewUnstartedServer(nil)
	e.srv.Start()
	if e.opts.PublicURL == "" {
		e.opts.PublicURL = e.srv.URL
	}
	h = httpapi.NewHandler(logger, e.opts)
	e.srv.Config.Handler = h
	t.Cleanup(e.srv.Close)
	return e
}

// stored reads request id's current upload from the store.
func (e *env) stored(id int64) []byte {
	e.t.Helper()
	r, err := e.store.Request(context.Background(), id)
	if err != nil || r.UploadName == nil {
		return nil
	}
	return e.read(id, files.Name(*r.UploadName))
}

// read reads request id's file name ("" when it has none).
func (e *env) read(id int64, name files.Name) []byte {
	e.t.Helper()
	o, err := e.files.Open(context.Background(), id, name)
	if err != nil {
		return nil
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// write stores request id's file name.
func (e *env) write(id int64, name files.Name, data []byte) {
	e.t.Helper()
	if err := e.files.WriteFile(context.Background(), id, name, data); err != nil {
		e.t.Fatal(err)
	}
}

// staged writes request id's staged upload (as the SFTP daemon does).
func (e *env) staged(id int64, data []byte) {
	e.t.Helper()
	p, err := e.files.StagePath(id, files.Upload)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

type failure struct {
	Reason   string   `json:"reason"`
	Message  string   `json:"message"`
	Code     string   `json:"code"`
	Value    *string  `json:"value"`
	Expected []string `json:"expected"`
	Param    string   `json:"param"`
}

type answer struct {
	Failures []failure      `json:"failures"`
	Request  map[string]any `json:"request"`
	status   int
	raw      []byte
}

func (a answer) reasons() []string {
	var out []string
	for _, f := range a.Failures {
		out = append(out, f.Reason)
	}
	return out
}

func (e *env) do(req *http.Request) answer {
	e.t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q, body %s", req.Method, req.URL.Path, ct, raw)
	}
	a := answer{status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &a); err != nil {
		e.t.Fatalf("%s %s: not JSON: %v: %s", req.Method, req.URL.Path, err, raw)
	}
	if a.Failures == nil {
		e.t.Fatalf("answer without a failures list: %s", raw)
	}
	return a
}

// transport is one way clients send parameters.
type transport struct {
	name string
	req  func(url string, p map[string]string) *http.Request
}

func form(p map[string]string) url.Values {
	v := url.Values{}
	for k, s := range p {
		v.Set(k, s)
	}
	return v
}

var transports = []transport{
	{"GET query", func(u string, p map[string]string) *http.Request {
		r, _ := http.NewRequest("GET", u+"?"+form(p).Encode(), nil)
		return r
	}},
	{"POST urlencoded", func(u string, p map[string]string) *http.Request {
		r, _ := http.NewRequest("POST", u, strings.NewReader(form(p).Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}},
	{"GET urlencoded body", func(u string, p map[string]string) *http.Request {
		r, _ := http.NewRequest("GET", u, strings.NewReader(form(p).Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}},
	{"POST multipart fields", func(u string, p map[string]string) *http.Request {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		for k, v := range p {
			w.WriteField(k, v)
		}
		w.Close()
		r, _ := http.NewRequest("POST", u, &b)
		r.Header.Set("Content-Type", w.FormDataContentType())
		return r
	}},
	{"POST multipart files", func(u string, p map[string]string) *http.Request {
		// key and request in the query (as the seed's curl -F), the rest as files.
		q := url.Values{}
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		for k, v := range p {
			if k == "key" || k == "request" {
				q.Set(k, v)
				continue
			}
			fw, _ := w.CreateFormFile(k, k+".txt")
			fw.Write([]byte(v))
		}
		w.Close()
		r, _ := http.NewRequest("POST", u+"?"+q.Encode(), &b)
		r.Header.Set("Content-Type", w.FormDataContentType())
		return r
	}},
}

func (e *env) call(tr transport, method string, p map[string]string) answer {
	e.t.Helper()
	return e.do(tr.req(e.srv.URL+"/database/v1/"+method, p))
}

func (e *env) get(method string, p map[string]string) answer {
	e.t.Helper()
	return e.call(transports[0], method, p)
}

var createParams = map[string]string{
	"contract": "M123456-abcdef", "aim": "test", "target": "16.0",
	"email": "john.doe@example.com", "filename": "db_name.dump",
}

// created is a draft request: its id and key as parameters.
func (e *env) create() map[string]string {
	e.t.Helper()
	a := e.get("create", createParams)
	if len(a.Failures) != 0 {
		e.t.Fatalf("create: %s", a.raw)
	}
	return map[string]string{"request": fmt.Sprint(a.Request["id"]), "key": a.Request["key"].(string)}
}

func (e *env) upload(method string, id map[string]string, body io.Reader) answer {
	e.t.Helper()
	r, _ := http.NewRequest(method, e.srv.URL+"/database/v1/upload?"+form(id).Encode(), body)
	r.Header.Set("Content-Type", "application/octet-stream")
	return e.do(r)
}

func (e *env) setState(id map[string]string, s store.State) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), `UPDATE requests SET state = $2 WHERE id = $1`, id["request"], s); err != nil {
		e.t.Fatal(err)
	}
}

func with(p map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range p {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "\x00" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func publicKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func noFailures(t *testing.T, what string, a answer) {
	t.Helper()
	if len(a.Failures) != 0 || a.status != 200 {
		t.Fatalf("%s: HTTP %d %s", what, a.status, a.raw)
	}
}

// TestEveryTransportEveryMethod runs the whole flow with each way of
// sending parameters.
func TestEveryTransportEveryMethod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keys := "# my laptop\n\n" + publicKey(t) + " me@laptop\n"
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := *e
			e.t = t
			a := e.call(tr, "create", createParams)
			noFailures(t, "create", a)
			if a.Request["state"] != "draft" || a.Request["target"] != "16.0" {
				t.Fatalf("create: %s", a.raw)
			}
			id := map[string]string{"request": fmt.Sprint(a.Request["id"]), "key": a.Request["key"].(string)}

			noFailures(t, "status", e.call(tr, "status", id))
			s := e.call(tr, "request_sftp_access", with(id, "ssh_keys", keys))
			noFailures(t, "request_sftp_access", s)
			if s.Request["sftp_user"] != "user_"+id["request"] || s.Request["shared_file"] != "db_name.dump" ||
				s.Request["sample_command"] != "sftp -P 2200 user_"+id["request"]+"@sftp.example.test" {
				t.Fatalf("request_sftp_access: %s", s.raw)
			}
			for _, m := range []string{"POST", "PUT"} {
				noFailures(t, "upload "+m, e.upload(m, id, strings.NewReader("PGDMP dump bytes "+m)))
			}
			p := e.call(tr, "process", id)
			noFailures(t, "process", p)
			if p.Request["state"] != "pending" {
				t.Fatalf("process: %s", p.raw)
			}
			e.setState(id, store.StateTesting)
			k := e.call(tr, "skip_test", id)
			noFailures(t, "skip_test", k)
			if k.Request["state"] != "delivered" {
				t.Fatalf("skip_test: %s", k.raw)
			}
			st := e.call(tr, "status", id)
			noFailures(t, "status", st)
			if st.Request["state"] != "delivered" || st.Request["filesize"] != "20.00 bytes" {
				t.Fatalf("status: %s", st.raw)
			}
		})
	}
}

func TestUploadReplacesAndStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create()
	big := make([]byte, 48<<20+12345) // realistic enough to cross every buffer and writeback boundary
	rand.Read(big)
	a := e.upload("PUT", id, bytes.NewReader(big))
	noFailures(t, "upload", a)
	if a.Request["filesize"] != "48.01 Mb" {
		t.Fatalf("filesize = %v", a.Request["filesize"])
	}
	r, err := e.store.Request(context.Background(), mustID(t, id))
	if err != nil {
		t.Fatal(err)
	}
	if got := sha(e.stored(r.ID)); got != *r.UploadSHA256 || *r.UploadSize != int64(len(big)) {
		t.Fatalf("stored sha256 %s size %d; file sha256 %s", *r.UploadSHA256, *r.UploadSize, got)
	}
	// A new complete upload replaces the previous one while draft.
	noFailures(t, "second upload", e.upload("POST", id, strings.NewReader("second")))
	b := e.stored(r.ID)
	if string(b) != "second" {
		t.Fatalf("upload was not replaced: %d bytes", len(b))
	}
	assertNoPartFiles(t, e, r.ID)
}

func mustID(t *testing.T, id map[string]string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(id["request"], &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// assertNoPartFiles: only the current upload (and artifacts) are stored,
// no partial or replaced upload.
func assertNoPartFiles(t *testing.T, e *env, id int64) {
	t.Helper()
	if parts := partFiles(e, id); len(parts) != 0 {
		t.Fatalf("partial or replaced files left behind: %v", parts)
	}
}
