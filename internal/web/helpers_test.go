package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// logBuffer keeps the server's log lines (to check no secret is in them).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// server is a whole upgrade-server (API, pages, SFTP, workers) on a fresh
// schema and data directory.
type server struct {
	URL   string
	Token string
	store *store.Store
	logs  *logBuffer
}

type serverOptions struct {
	contracts string // UPGRADE_CONTRACTS ("": any)
	maxUpload int64
	noAdmin   bool
	publicURL string
}

const adminToken = "console-token-0123456789"

func newServer(t *testing.T, o serverOptions) *server {
	t.Helper()
	s := &server{Token: adminToken, logs: &logBuffer{}}
	if o.noAdmin {
		s.Token = ""
	}
	db := pgtest.NewSchema(t)
	cfg := app.Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", PublicURL: o.publicURL, Region: "eu1", DataDir: t.TempDir(),
		DatabaseURL: db, Targets: []string{"12.0", "13.0", "14.0", "15.0", "16.0", "17.0", "saas~17.2", "18.0"},
		Contracts: o.contracts, MaxUploadBytes: o.maxUpload, SFTPPublicPort: 0, SFTPAccessTTL: time.Hour,
		SFTPIdleTimeout: time.Minute, SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: 5 * time.Second,
		Workers: 1, Engine: "passthrough", EngineTimeout: time.Minute, AdminToken: s.Token}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(s.logs, testLog(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan app.Addrs, 1)
	go func() { done <- app.Serve(ctx, cfg, logger, func(a app.Addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		s.URL = "http://" + a.HTTP.String()
	case err := <-done:
		cancel()
		t.Fatalf("the server did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	pool, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.store = store.New(pool, nil)
	return s
}

// testLog shows the server's logs with -v.
func testLog(t *testing.T) io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

// answer is a v1 answer.
type answer struct {
	Failures []struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"failures"`
	Request map[string]any `json:"request"`
}

// call calls a v1 method with params (POST, urlencoded) and fails the test
// on a failure.
func (s *server) call(t *testing.T, method string, params url.Values) answer {
	t.Helper()
	resp, err := http.PostForm(s.URL+"/database/v1/"+method, params)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	if len(a.Failures) > 0 {
		t.Fatalf("%s: %v", method, a.Failures)
	}
	return a
}

// auth is the request and key parameters of a request.
func auth(a answer) url.Values {
	return url.Values{"request": {fmt.Sprint(int64(a.Request["id"].(float64)))}, "key": {a.Request["key"].(string)}}
}

// newRequest creates a request and uploads dump over the API.
func (s *server) newRequest(t *testing.T, contract, filename string, dump []byte) answer {
	t.Helper()
	a := s.call(t, "create", url.Values{"contract": {contract}, "email": {"ops@example.com"}, "target": {"17.0"},
		"aim": {"test"}, "filename": {filename}})
	if dump != nil {
		req, _ := http.NewRequest("PUT", s.URL+"/database/v1/upload?"+auth(a).Encode(), bytes.NewReader(dump))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	return a
}

// get fetches a URL with headers (name, value, …).
func get(t *testing.T, client *http.Client, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// browserAccept is what a browser sends when it navigates.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

// noRedirects is a client that shows redirects instead of following them,
// with a cookie jar.
func noRedirects(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// fixture is the committed pg_dump custom archive of an Odoo 12 database.
func fixture(t *testing.T) (string, []byte) {
	t.Helper()
	p, err := filepath.Abs("../dump/testdata/fixtures/odoo12.custom.dump")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// noSecretsIn fails the test when the logs hold one of secrets.
func noSecretsIn(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("a log line holds a secret (%.6s…)", s)
		}
	}
}

// waitStored waits until the store holds request id in state (the workers
// take queued requests at once, woken by the store).
func (s *server) waitStored(t *testing.T, id int64, state store.State) store.Request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := s.store.Request(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == state {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %d is %s, never %s", id, r.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampleRequests fills a server with requests in the states the pages
// show: done (with its files), failed, a draft with SFTP access granted,
// and one held pending.
func sampleRequests(t *testing.T, srv *server) (done, failed, draft, pending answer) {
	t.Helper()
	_, dump := fixture(t)
	done = srv.newRequest(t, "M123456-abcdef", "acme-production-2024-11-28.dump", dump)
	srv.call(t, "process", auth(done))
	failed = srv.newRequest(t, "scenario:fail=The dump was cut short: pg_restore stopped at table sale_order_line.", "acme-copy.dump", []byte("not a dump"))
	srv.call(t, "process", auth(failed))
	draft = srv.newRequest(t, "M123456-abcdef", "acme-test-copy-with-a-rather-long-name.dump", nil)
	srv.call(t, "request_sftp_access", url.Values{"request": auth(draft)["request"], "key": auth(draft)["key"],
		"ssh_keys": {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example.com"}})
	pending = srv.newRequest(t, "scenario:polls=3", "acme-2023.dump", dump)
	srv.call(t, "process", auth(pending))
	srv.waitStored(t, reqID(done), store.StateDone)
	srv.waitStored(t, reqID(failed), store.StateFailed)
	return done, failed, draft, pending
}

func reqID(a answer) int64 { return int64(a.Request["id"].(float64)) }
