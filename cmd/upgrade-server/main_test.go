package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

func TestMain(m *testing.M) {
	serveAsProcess()
	pgtest.Exit(m)
}

// server runs run() in-process and returns its base URL once it listens.
type server struct {
	url    string
	sftp   string // host:port of the SFTP daemon
	cancel context.CancelFunc
	done   chan error
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startServer(t *testing.T, env map[string]string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &server{cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	if _, ok := env["UPGRADE_HTTPS_ADDR"]; !ok {
		env["UPGRADE_HTTPS_ADDR"] = "127.0.0.1:0" // never the default :8443, which parallel tests share
	}
	getenv := func(k string) string { return env[k] }
	go func() {
		s.done <- run(ctx, []string{"upgrade-server"}, getenv, pw, s.stderr)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() {
		cancel()
		t.Fatalf("server did not start: %v\n%s", <-s.done, s.stderr.String())
	}
	s.url = strings.TrimPrefix(lines.Text(), "upgrade-server: http listening on ")
	if !lines.Scan() {
		cancel()
		t.Fatalf("server did not start its SFTP daemon: %v\n%s", <-s.done, s.stderr.String())
	}
	s.sftp = strings.TrimPrefix(lines.Text(), "upgrade-server: sftp listening on ")
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() { s.stop(t) })
	waitHealthy(t, s.url+"/healthz")
	return s
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("run did not return after cancel")
	}
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeAuthorizedKeys(t *testing.T, path string) {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := ssh.NewPublicKey(pub)
	content := "# my laptop\n\n" + string(ssh.MarshalAuthorizedKey(pk))
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSeedBashFlow runs the seed's curl + jq examples against the server.
func TestSeedBashFlow(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "cmp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_DATA_DIR":     t.TempDir(),
		"UPGRADE_WORKERS":      "0", // the API alone: the request stays pending
	})
	work := t.TempDir()
	dump := make([]byte, 8<<20)
	rand.Read(dump)
	copy(dump, "PGDMP")
	os.WriteFile(filepath.Join(work, "openchs.70.cdump"), dump, 0o600)
	writeAuthorizedKeys(t, filepath.Join(work, "authorized_keys"))

	cmd := exec.Command("bash", "testdata/seed_flow.sh")
	cmd.Env = append(os.Environ(), "BASE="+s.url, "WORKDIR="+work)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SEED-FLOW-OK") {
		t.Fatalf("seed flow: %v\n%s\nserver log:\n%s", err, out, s.stderr.String())
	}
	if strings.Contains(s.stderr.String(), readKey(t, work)) {
		t.Fatal("a request key appears in the log")
	}
}

// TestSeedSFTPFlow runs the seed's SFTP session with OpenSSH's sftp against
// the whole server.
func TestSeedSFTPFlow(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "cmp", "sftp", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_DATA_DIR":     t.TempDir(),
	})
	work := t.TempDir()
	// An Odoo 12 database in pg_dump's custom format (internal/dump/testdata/make-fixtures.sh).
	dump, err := os.ReadFile("../../internal/dump/testdata/fixtures/odoo12.custom.dump")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "openchs.70.cdump"), dump, 0o600)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(work, "id_ed25519")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	_, port, _ := net.SplitHostPort(s.sftp)
	cmd := exec.Command("bash", "testdata/seed_sftp_flow.sh")
	cmd.Env = append(os.Environ(), "BASE="+s.url, "WORKDIR="+work, "SFTP_PORT="+port)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SEED-SFTP-FLOW-OK") {
		t.Fatalf("seed sftp flow: %v\n%s\nserver log:\n%s", err, out, s.stderr.String())
	}
}

func readKey(t *testing.T, work string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(work, "create_result.json"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), `"key": "`)
	if i < 0 {
		t.Fatalf("no key in %s", b)
	}
	return string(b[i+8 : i+8+24])
}

// TestEmbeddedDefault is `go run ./cmd/upgrade-server` with no set-up: the
// server creates and starts its own PostgreSQL, reuses it on restart and
// stops it on shutdown.
func TestEmbeddedDefault(t *testing.T) {
	dir, err := os.MkdirTemp("", "upgrade-server-embedded-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // root runs PostgreSQL as the postgres user
	t.Cleanup(func() { os.RemoveAll(dir) })
	env := map[string]string{"UPGRADE_HTTP_ADDR": "127.0.0.1:0", "UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": filepath.Join(dir, "data")}

	s := startServer(t, env)
	waitHealthy(t, s.url+"/readyz")
	resp, err := http.Get(s.url + "/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.stop(t)
	pid := filepath.Join(dir, "data", "postgres", "postmaster.pid")
	if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("embedded PostgreSQL still running after shutdown: %v", err)
	}

	s = startServer(t, env)
	resp, err = http.Get(s.url + "/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"id": 2,`) {
		t.Fatalf("the restarted server did not reuse its database: %s", b)
	}
}

func TestConfig(t *testing.T) {
	env := map[string]string{"UPGRADE_HTTP_ADDR": ":9999", "UPGRADE_TARGETS": "15.0, 16.0", "UPGRADE_MAX_UPLOAD_BYTES": "2GiB"}
	cfg, err := loadConfig([]string{"x", "--http-addr", ":7777"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":7777" || len(cfg.Targets) != 2 || cfg.Targets[1] != "16.0" || cfg.MaxUploadBytes != 2<<30 ||
		cfg.Region != "eu1" || cfg.SFTPPublicPort != 2200 || cfg.SFTPAccessTTL != 24*time.Hour {
		t.Fatalf("cfg = %+v", cfg)
	}
	_, err = loadConfig([]string{"x", "--log-format", "xml", "--sftp-public-port", "-1", "--max-upload-bytes", "lots"},
		func(string) string { return "" }, io.Discard)
	for _, want := range []string{"--log-format", "--sftp-public-port", "--max-upload-bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	var help strings.Builder
	// Under go run, args[0] is a path in Go's build cache.
	goRun := "/tmp/go-build2926468/b001/exe/upgrade-server"
	if _, err := loadConfig([]string{goRun, "--help"}, func(string) string { return "" }, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range settings {
		if !strings.Contains(help.String(), "--"+s.name+" ("+s.env+", default ") {
			t.Errorf("--help does not list %s with its variable and default", s.name)
		}
	}
	if !strings.HasPrefix(help.String(), "Usage: upgrade-server [flags]") || strings.Contains(help.String(), "go-build") ||
		!strings.Contains(help.String(), "upgrade-server admin") || !strings.Contains(help.String(), "--version") {
		t.Errorf("--help:\n%s", help.String())
	}
	var out strings.Builder
	if err := run(context.Background(), []string{goRun, "--version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^upgrade-server (devel|v\S+)( \([0-9a-f]+(, modified)?\))? go\S+\n$`).MatchString(out.String()) {
		t.Errorf("--version printed %q", out.String())
	}
}

// TestREADMEListsEverySetting keeps the configuration table complete.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(string(readme), "| `--"+s.name+"` | `"+s.env+"` |") {
			t.Errorf("README.md's configuration table lacks --%s / %s", s.name, s.env)
		}
	}
}

// TestStartupNamesAnOpenableAddress: listening on every interface, the
// server prints http://localhost:PORT, not http://[::]:PORT.
func TestStartupNamesAnOpenableAddress(t *testing.T) {
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":    ":0",
		"UPGRADE_SFTP_ADDR":    ":0",
		"UPGRADE_DATA_DIR":     t.TempDir(),
		"UPGRADE_WORKERS":      "0",
	})
	if !regexp.MustCompile(`^http://localhost:\d+$`).MatchString(s.url) || !regexp.MustCompile(`^localhost:\d+$`).MatchString(s.sftp) {
		t.Fatalf("start-up lines name %q and %q", s.url, s.sftp)
	}
}

// TestShutdownLetsUploadsFinish: SIGTERM (here: ctx cancel) while an upload
// streams; the upload completes, then run returns.
func TestShutdownLetsUploadsFinish(t *testing.T) {
	dbURL := pgtest.NewSchema(t)
	s := startServer(t, map[string]string{
		"UPGRADE_WORKERS":      "0",
		"UPGRADE_DATABASE_URL": dbURL,
		"UPGRADE_HTTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_DATA_DIR":     t.TempDir(),
	})
	db, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	resp, err := http.Get(s.url + "/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Request struct {
			ID  int    `json:"id"`
			Key string `json:"key"`
		} `json:"request"`
	}
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()

	pr, pw := io.Pipe()
	result := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/database/v1/upload?request=%d&key=%s", s.url, created.Request.ID,
			url.QueryEscape(created.Request.Key)), pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- string(b)
	}()
	pw.Write(make([]byte, 1<<20))
	deadline := time.Now().Add(10 * time.Second)
	for uploading := false; !uploading; {
		db.QueryRow(context.Background(), `SELECT upload_token IS NOT NULL FROM requests WHERE id = $1`, created.Request.ID).Scan(&uploading)
		if time.Now().After(deadline) {
			t.Fatal("the upload never started")
		}
	}
	go s.cancel() // the shutdown starts while the body is still streaming
	waitLog(t, s, "shutting down")
	pw.Write(make([]byte, 1<<20))
	pw.Close()
	got := <-result
	if !strings.Contains(got, `"failures": []`) || !strings.Contains(got, `"filesize": "2.00 Mb"`) {
		t.Fatalf("upload during shutdown: %s\n%s", got, s.stderr.String())
	}
	if err := <-s.done; err != nil {
		t.Fatal(err)
	}
	s.cancel = nil
}

func waitLog(t *testing.T, s *server, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.stderr.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
