package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/files/s3test"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// serverProcessEnv makes this test binary run as the server (TestMain):
// a real process of its own, as on another host.
const serverProcessEnv = "UPGRADE_TEST_SERVER_PROCESS"

// serveAsProcess runs the server when the test binary was started as one.
func serveAsProcess() {
	if os.Getenv(serverProcessEnv) != "1" {
		return
	}
	if err := run(context.Background(), []string{"upgrade-server"}, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upgrade-server:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// process is a server running as its own process.
type process struct {
	cmd       *exec.Cmd
	url, sftp string
	stderr    *syncBuffer
	done      chan struct{}
}

// startProcess starts a server process with env (over the test's own
// environment) and waits for its listeners.
func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverProcessEnv+"=1", "UPGRADE_HTTPS_ADDR=127.0.0.1:0")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	lines := bufio.NewScanner(out)
	for i := 0; i < 2; i++ {
		if !lines.Scan() {
			<-p.done
			t.Fatalf("the server process did not start:\n%s", p.stderr.String())
		}
		line := lines.Text()
		if u, ok := strings.CutPrefix(line, "upgrade-server: http listening on "); ok {
			p.url = u
		}
		if s, ok := strings.CutPrefix(line, "upgrade-server: sftp listening on "); ok {
			p.sftp = s
		}
	}
	go io.Copy(io.Discard, out)
	if p.url != "" {
		waitHealthy(t, p.url+"/healthz")
	}
	return p
}

func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once, as a lost machine would.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// TestSeparateHostsOnS3: a front end (HTTP and SFTP, no workers) and a
// worker (no listeners) run as separate processes with no shared data
// directory, sharing only PostgreSQL and an S3 endpoint (gofakes3 speaking
// the S3 protocol over HTTP). Requests uploaded through the front end over
// HTTP and SFTP are processed by the worker and downloaded through the
// front end, byte-identical to the object the worker stored; a worker
// killed mid-run is replaced by another that finishes the request.
func TestSeparateHostsOnS3(t *testing.T) {
	for _, tool := range []string{"sftp", "ssh-keygen", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	s3 := s3test.Start(t, "upgrades")
	common := map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_STORAGE": "s3://upgrades/deployment-a",
		"UPGRADE_S3_ENDPOINT": s3.URL, "UPGRADE_S3_PATH_STYLE": "true", "UPGRADE_S3_REGION": "us-east-1",
		"UPGRADE_S3_ACCESS_KEY": s3test.AccessKey, "UPGRADE_S3_SECRET_KEY": s3test.SecretKey,
		"UPGRADE_ENGINE": "builtin", "UPGRADE_UPLOAD_FSYNC": "false", "UPGRADE_WORKER_LEASE": "3s",
		"UPGRADE_SHUTDOWN_TIMEOUT": "5s", "UPGRADE_TARGETS": "12.0,13.0,14.0,15.0,16.0",
	}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{"UPGRADE_DATA_DIR": t.TempDir()} // each process its own, as on its own host
		for k, v := range common {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	front := startProcess(t, with(map[string]string{"UPGRADE_WORKERS": "0", "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_SFTP_PUBLIC_PORT": "0"}))
	workerEnv := with(map[string]string{"UPGRADE_WORKERS": "1", "UPGRADE_HTTP_ADDR": "off", "UPGRADE_SFTP_ADDR": "off"})
	worker := startProcess(t, workerEnv)

	// The test reads the store as the worker wrote it.
	store, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir(),
		URL: "s3://upgrades/deployment-a", S3: s3.Config()})
	if err != nil {
		t.Fatal(err)
	}
	custom, err := os.ReadFile("../../internal/dump/testdata/fixtures/odoo12.custom.dump")
	if err != nil {
		t.Fatal(err)
	}
	overHTTP := createOn(t, front.url, "db.dump")
	putBody(t, front.url, overHTTP, custom)
	overSFTP := createOn(t, front.url, "db.sql")
	sftpPut(t, front, overSFTP, "../../internal/dump/testdata/fixtures/odoo12.sql")

	for _, id := range []url.Values{overHTTP, overSFTP} {
		if a := call(t, front.url, "process", id); len(a.Failures) != 0 {
			t.Fatalf("process: %+v", a.Failures)
		}
	}
	for _, id := range []url.Values{overHTTP, overSFTP} {
		r := awaitState(t, front.url, id, "done", 2*time.Minute)
		got := fetchBody(t, r["upgraded_dump_url"].(string))
		var reqID int64
		fmt.Sscan(id.Get("request"), &reqID)
		o, err := store.Open(context.Background(), reqID, files.UpgradedArchive)
		if err != nil {
			t.Fatalf("the upgraded dump is not in the object store: %v", err)
		}
		stored, _ := io.ReadAll(o)
		o.Close()
		if !bytes.Equal(got, stored) {
			t.Fatalf("request %d: the download (%d bytes) differs from the stored object (%d bytes)", reqID, len(got), len(stored))
		}
		info, err := dump.Inspect(bytes.NewReader(got), int64(len(got)))
		if err != nil || info.DatabaseVersion != "16.0" {
			t.Fatalf("request %d: the downloaded dump: %+v %v", reqID, info, err)
		}
	}

	// A worker killed mid-restore: another takes the request up once the
	// lease (3s here) expires, and finishes it.
	big := createOn(t, front.url, "big.sql")
	putBody(t, front.url, big, bigSQL(400_000))
	if a := call(t, front.url, "process", big); len(a.Failures) != 0 {
		t.Fatalf("process: %+v", a.Failures)
	}
	waitEvent(t, front.url, big, "Restoring into a scratch database…", time.Minute)
	worker.kill()
	startProcess(t, workerEnv)
	r := awaitState(t, front.url, big, "done", 3*time.Minute)
	if r["database_version"] != "12.0" {
		t.Fatalf("after the takeover: %v", r)
	}
	if log := strings.Join(eventsOf(t, front.url, big), "\n"); !strings.Contains(log, "Attempt 2: taking over") {
		t.Fatalf("no takeover in the request log:\n%s", log)
	}
}

func createOn(t *testing.T, base, filename string) url.Values {
	t.Helper()
	a := call(t, base, "create", url.Values{"contract": {"M1"}, "aim": {"test"}, "target": {"16.0"},
		"email": {"qa@example.com"}, "filename": {filename}})
	if len(a.Failures) != 0 {
		t.Fatalf("create: %+v", a.Failures)
	}
	return url.Values{"request": {fmt.Sprint(a.Request["id"])}, "key": {a.Request["key"].(string)}}
}

func putBody(t *testing.T, base string, id url.Values, body []byte) {
	t.Helper()
	req, _ := http.NewRequest("PUT", base+"/database/v1/upload?"+id.Encode(), bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte(`"failures": []`)) {
		t.Fatalf("upload: %s", b)
	}
}

func fetchBody(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: HTTP %d %v", u, resp.StatusCode, err)
	}
	return b
}

// sftpPut uploads a file with OpenSSH's sftp to a request's shared file.
func sftpPut(t *testing.T, p *process, id url.Values, src string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	params := url.Values{"ssh_keys": {string(pub)}}
	for k, v := range id {
		params[k] = v
	}
	a := call(t, p.url, "request_sftp_access", params)
	if len(a.Failures) != 0 {
		t.Fatalf("request_sftp_access: %+v", a.Failures)
	}
	host, port, _ := strings.Cut(p.sftp, ":")
	cmd := exec.Command("sftp", "-b", "-", "-P", port, "-i", key, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", a.Request["sftp_user"].(string)+"@"+host)
	cmd.Stdin = strings.NewReader("put " + src + " " + a.Request["shared_file"].(string) + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sftp put: %v\n%s", err, out)
	}
}

func awaitState(t *testing.T, base string, id url.Values, want string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := call(t, base, "status", id)
		if a.Request["state"] == want {
			return a.Request
		}
		if s := a.Request["state"]; s == "invalid" || s == "cancelled" || time.Now().After(deadline) {
			t.Fatalf("request %s is %v (want %s): %v", id.Get("request"), s, want, a.Request["customer_message"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventsOf reads a request's log from its status page's log lines (the
// same log the status page shows), through the admin-free status page.
func eventsOf(t *testing.T, base string, id url.Values) []string {
	t.Helper()
	a := call(t, base, "status", id)
	page := string(fetchBody(t, a.Request["status_url"].(string)))
	return strings.Split(page, "\n")
}

func waitEvent(t *testing.T, base string, id url.Values, event string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(strings.Join(eventsOf(t, base, id), "\n"), event) {
		if time.Now().After(deadline) {
			t.Fatalf("the request log never showed %q", event)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var bigOnce sync.Map

// bigSQL is an Odoo-shaped plain dump with rows partners: a restore that
// takes seconds.
func bigSQL(rows int) []byte {
	if b, ok := bigOnce.Load(rows); ok {
		return b.([]byte)
	}
	var b bytes.Buffer
	b.WriteString("--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.4\n-- Dumped by pg_dump version 15.4\n\n" +
		"CREATE TABLE public.ir_module_module (id integer, name character varying, state character varying, latest_version character varying);\n" +
		"CREATE TABLE public.ir_config_parameter (id integer, key character varying, value text);\n" +
		"CREATE TABLE public.res_partner (id integer, name character varying, comment text);\n\n" +
		"COPY public.ir_module_module (id, name, state, latest_version) FROM stdin;\n1\tbase\tinstalled\t12.0.1.3\n2\tweb\tinstalled\t12.0.1.0\n\\.\n\n" +
		"COPY public.ir_config_parameter (id, key, value) FROM stdin;\n1\tdatabase.uuid\t00000000-1111-2222-3333-444444444444\n\\.\n\n" +
		"COPY public.res_partner (id, name, comment) FROM stdin;\n")
	line := strings.Repeat("x", 200)
	for i := range rows {
		fmt.Fprintf(&b, "%d\tPartner %d\t%s\n", i, i, line)
	}
	b.WriteString("\\.\n\n")
	bigOnce.Store(rows, b.Bytes())
	return b.Bytes()
}
