package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/odooclient"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// odooServer is a whole server for Odoo's client: HTTP (the client's
// first base), HTTPS after the host switch, rsync endpoints.
type odooServer struct {
	*server
	data string // the data directory
	cert string // the HTTPS certificate, for the client's SSL_CERT_FILE
}

func startOdooServer(t *testing.T, env map[string]string) *odooServer {
	t.Helper()
	for _, tool := range []string{"rsync", "ssh", "ssh-keygen", "pg_dump", "pg_restore", "createdb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	data := t.TempDir()
	all := map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_HTTP_ADDR": "127.0.0.1:0", "UPGRADE_SFTP_ADDR": "127.0.0.1:0",
		"UPGRADE_HTTPS_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": data, "UPGRADE_ENGINE": "builtin", "UPGRADE_WORKERS": "2",
		"UPGRADE_UPLOAD_FSYNC": "false",
	}
	for k, v := range env {
		all[k] = v
	}
	s := startServer(t, all)
	return &odooServer{server: s, data: data, cert: filepath.Join(data, "tls", "cert.pem")}
}

// uploadDir is where request id's rsync upload lands: the work folder in
// the data directory, or the one the engine uses in the system's
// temporary directory when the tools user cannot reach the data
// directory (tests run as root, in private temporary folders).
func (s *odooServer) uploadDir(id int64) string {
	work := filepath.Join(s.data, "work")
	name := fmt.Sprintf("transfer-%d-upload", id)
	if _, err := os.Stat(filepath.Join(work, name)); err == nil {
		return filepath.Join(work, name)
	}
	sum := sha256.Sum256([]byte(work))
	return filepath.Join(os.TempDir(), "upgrade-server-work-"+hex.EncodeToString(sum[:6]), name)
}

func (s *odooServer) client(t *testing.T) *odooclient.Client {
	t.Helper()
	c, err := odooclient.New(s.url, s.cert, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// database makes a database restored from a committed fixture (an Odoo
// 12 database), dropped at cleanup, and returns its URL.
func database(t *testing.T, fixture string) string {
	t.Helper()
	u := newDatabase(t, "odooclient")
	if out, err := exec.Command("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "-d", u,
		"../../internal/dump/testdata/fixtures/"+fixture).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore %s: %v\n%s", fixture, err, out)
	}
	return u
}

// newDatabase creates an empty database, dropped at cleanup.
func newDatabase(t *testing.T, prefix string) string {
	t.Helper()
	base, err := url.Parse(pgtest.BaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := prefix + "_" + hex.EncodeToString(b)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base.String())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base.String())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u := *base
	u.Path = "/" + name
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return u.String()
}

// restoreDownload restores a downloaded directory-format dump as the
// script does (createdb, pg_restore --format d) and returns the version
// of its base module.
func restoreDownload(t *testing.T, dir, dumpName string) string {
	t.Helper()
	u := newDatabase(t, "restored")
	if out, err := exec.Command("pg_restore", "--no-owner", "--format", "d", filepath.Join(dir, dumpName), "--dbname", u,
		"--jobs", "2").CombinedOutput(); err != nil {
		t.Fatalf("pg_restore --format d of the download: %v\n%s", err, out)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, `SELECT latest_version FROM ir_module_module WHERE name = 'base'`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// run is the script's whole test run: create, upload, process, wait
// (status and logs), download, restore.
func runScript(t *testing.T, s *odooServer, src, dest string) (log string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := s.client(t)
	if _, err := c.Create(ctx, "M123456-abcdef", "16.0", "test", []string{"UPG_DEBUG=1"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Base, "https://") {
		t.Fatalf("no host switch to HTTPS: %s", c.Base)
	}
	if _, err := c.Upload(ctx, src, dest); err != nil {
		t.Fatalf("upload: %v\n%s", err, s.stderr.String())
	}
	st, err := c.Status(ctx)
	if err != nil || (st["status"] != "pending" && st["status"] != "progress" && st["status"] != "done") {
		t.Fatalf("after transfer/stop: %v %v", st, err)
	}
	compatible, err := c.Process(ctx)
	if err != nil || !compatible {
		t.Fatalf("process: %v %v", compatible, err)
	}
	var b strings.Builder
	st, err = c.Wait(ctx, 100*time.Millisecond, func(s string) { b.WriteString(s) })
	if err != nil || st["status"] != "done" {
		t.Fatalf("the request ended %v (%v)\nlog:\n%s", st, err, b.String())
	}
	dst := t.TempDir()
	name, err := c.Download(ctx, dst)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	for _, f := range []string{name + "/toc.dat", "upgrade-report.html", "upgrade.log"} {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			t.Errorf("the download lacks %s", f)
		}
	}
	if v := restoreDownload(t, dst, name); !strings.HasPrefix(v, "16.0") {
		t.Fatalf("the restored database's base is %s, want 16.0.*", v)
	}
	return b.String()
}

// TestOdooClient drives the server as Odoo's upgrade script does, with the
// real rsync, ssh, pg_dump and pg_restore: a database (-d: pg_dump --format
// d, the folder sent), each single-file dump kind (-i), then restores the
// downloaded directory-format dump.
func TestOdooClient(t *testing.T) {
	s := startOdooServer(t, nil)
	t.Run("database", func(t *testing.T) {
		t.Parallel()
		db := database(t, "odoo12.custom.dump")
		work := t.TempDir()
		if out, err := exec.Command("pg_dump", "--no-owner", "--format", "d", "--jobs", "2", "--file",
			filepath.Join(work, "origin.dump"), db).CombinedOutput(); err != nil {
			t.Fatalf("pg_dump: %v\n%s", err, out)
		}
		log := runScript(t, s, filepath.Join(work, "origin.dump")+"/", "origin.dump")
		for _, want := range []string{"Upload received over rsync: origin.dump (directory-format dump", "Queued for processing."} {
			if !strings.Contains(log, want) {
				t.Errorf("the log lacks %q:\n%s", want, log)
			}
		}
	})
	fixtures := "../../internal/dump/testdata/fixtures/"
	for _, tt := range []struct{ name, src, dest string }{
		{"custom", "odoo12.custom.dump", "origin.dump"},
		{"sql", "odoo12.sql", "origin.sql"},
		{"sql.gz", "odoo12.sql.gz", "origin.sql.gz"},
		{"odoo zip", "odoo12.odoo-backup.zip", "origin.zip"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			runScript(t, s, fixtures+tt.src, tt.dest)
		})
	}
	t.Run("directory given as a file", func(t *testing.T) {
		t.Parallel()
		work := t.TempDir()
		if out, err := exec.Command("tar", "-xf", fixtures+"odoo12.dir.tar", "-C", work).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v %s", err, out)
		}
		runScript(t, s, filepath.Join(work, "odoo12.dir")+"/", "origin.dump")
	})
	if strings.Contains(s.stderr.String(), "token=") {
		t.Error("a token appears in the server's log")
	}
}

// TestOdooClientResume: an rsync cut half-way leaves the request new;
// running the script again sends only what is missing and completes it.
func TestOdooClientResume(t *testing.T) {
	s := startOdooServer(t, map[string]string{"UPGRADE_ENGINE": "passthrough"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A directory dump of a database with some bulk: several data files,
	// uncompressed so their sizes are known.
	db := database(t, "odoo12.custom.dump")
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE bulk_%d AS SELECT g AS id, md5(g::text) || md5((g*7)::text) AS v
			FROM generate_series(1, 60000) g`, i)); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	work := t.TempDir()
	src := filepath.Join(work, "origin.dump")
	if out, err := exec.Command("pg_dump", "--no-owner", "--format", "d", "--compress", "0", "--file", src, db).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	total := treeBytes(t, src)

	c := s.client(t)
	if _, err := c.Create(ctx, "M123456-abcdef", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	tr, err := c.Start(ctx, "upload")
	if err != nil {
		t.Fatal(err)
	}
	// Slowly, so it is cut after some files are complete.
	cmd := c.UploadCommand(ctx, tr, src+"/", "origin.dump", "--bwlimit=2000")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(s.uploadDir(c.RequestID), "origin.dump")
	deadline := time.Now().Add(time.Minute)
	for treeBytes(t, staged) < total/3 {
		if time.Now().After(deadline) {
			t.Fatalf("the upload never reached a third: %d of %d bytes\n%s", treeBytes(t, staged), total, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL) // the connection drops
	cmd.Wait()
	var er *odooclient.ErrorResult
	if err := c.Stop(ctx); !errors.As(err, &er) || !strings.Contains(er.Message, "did not complete") {
		t.Fatalf("transfer/stop after a cut rsync: %v", err)
	}
	if st, err := c.Status(ctx); err != nil || st["status"] != "new" {
		t.Fatalf("after a cut upload the request is %v (%v), want new", st, err)
	}
	// The script run again: the same command, a new transfer.
	rsyncOut, err := c.Upload(ctx, src+"/", "origin.dump", "--info=stats2")
	if err != nil {
		t.Fatal(err)
	}
	sent := literalData(t, rsyncOut)
	if sent <= 0 || sent >= total*9/10 {
		t.Fatalf("the resumed rsync sent %d of %d bytes: not only what was missing\n%s", sent, total, rsyncOut)
	}
	if _, err := c.Process(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Wait(ctx, 100*time.Millisecond, nil); err != nil || st["status"] != "done" {
		t.Fatalf("after the resumed upload: %v %v", st, err)
	}
	dst := t.TempDir()
	name, err := c.Download(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if got := treeBytes(t, filepath.Join(dst, name)); got != total { // passthrough: the upload itself
		t.Fatalf("downloaded %d bytes, uploaded %d", got, total)
	}
	if out, err := exec.Command("pg_restore", "--list", "--format", "d", filepath.Join(dst, name)).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore --list of the download: %v\n%s", err, out)
	}
}

func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// literalData reads rsync --stats' "Literal data: N bytes".
func literalData(t *testing.T, out string) int64 {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Literal data: "); ok {
			var n int64
			fmt.Sscan(strings.ReplaceAll(strings.Fields(rest)[0], ",", ""), &n)
			return n
		}
	}
	t.Fatalf("no Literal data in rsync's stats:\n%s", out)
	return 0
}

// TestOdooClientRefusals: what the protocol refuses, each with a clear
// {"result": {"error"}} (or a refused SSH login), nothing lost.
func TestOdooClientRefusals(t *testing.T) {
	s := startOdooServer(t, map[string]string{"UPGRADE_ENGINE": "passthrough", "UPGRADE_MAX_UPLOAD_BYTES": "50MiB"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := s.client(t)
	if _, err := c.Create(ctx, "M123456-abcdef", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		var er *odooclient.ErrorResult
		if !errors.As(err, &er) || !strings.Contains(er.Message, want) {
			t.Errorf("%s: %v, want an error saying %q", what, err, want)
		}
	}
	_, err := c.Call(ctx, "create", map[string]any{"contract": "M1", "target": "99.0", "aim": "test", "ssh_key": "nope",
		"env_vars": []string{"LD_PRELOAD=/tmp/x.so", "novalue"}})
	refused("bad create", err, "Invalid value \"99.0\"")
	refused("bad create", err, "LD_PRELOAD may not be set")
	refused("bad create", err, "not of the form NAME=VALUE")
	_, err = c.Call(ctx, "transfer/start", map[string]any{"token": c.Token, "transfer_type": "sideways"})
	refused("unknown transfer type", err, "Unknown transfer type")
	_, err = c.Call(ctx, "transfer/start", map[string]any{"token": c.Token, "transfer_type": "download"})
	refused("download of a new request", err, "nothing to download")
	_, err = c.Process(ctx)
	refused("process before an upload", err, "No dump has been uploaded")
	err = c.Stop(ctx)
	refused("stop without a transfer", err, "No transfer")

	// One unknown-token answer, whatever the token.
	var answers []string
	for _, tok := range []any{"0000", strings.Repeat("f", 40), 42, nil, strings.Repeat("x", 5000)} {
		_, err := c.Call(ctx, "status", map[string]any{"token": tok})
		answers = append(answers, fmt.Sprint(err))
	}
	for _, a := range answers {
		if a != answers[0] || !strings.Contains(a, "Unknown or invalid token") {
			t.Errorf("token answers differ or say too much: %q", answers)
			break
		}
	}

	// Malformed and oversized bodies: HTTP 200 and an error result.
	for _, body := range [][]byte{[]byte("{nope"), []byte(`{"params": [1, 2]}`), bytes.Repeat([]byte("x"), 2<<20)} {
		resp, err := http.Post(s.url+"/upgrade/request/status", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var ans bytes.Buffer
		ans.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength <= 0 || !strings.Contains(ans.String(), `"error"`) {
			t.Errorf("body %.20q: HTTP %d, length %d, %s", body, resp.StatusCode, resp.ContentLength, ans.String())
		}
	}

	// A second transfer while an rsync runs on the first.
	work := t.TempDir()
	big := filepath.Join(work, "origin.sql")
	f, _ := os.Create(big)
	f.WriteString("--\n-- PostgreSQL database dump\n--\n")
	f.Write(bytes.Repeat([]byte("-- filler line of a big dump\n"), 1<<20)) // 29 MiB
	f.Close()
	tr, err := c.Start(ctx, "upload")
	if err != nil {
		t.Fatal(err)
	}
	slow := c.UploadCommand(ctx, tr, big, "origin.sql", "--bwlimit=1000")
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow rsync to run", func() bool { return treeBytes(t, s.uploadDir(c.RequestID)) > 0 })
	_, err = c.Start(ctx, "upload")
	refused("a second transfer", err, "Another transfer of this request is running")

	// Another request's key cannot log in on this request's port.
	other := s.client(t)
	if _, err := other.Create(ctx, "M123456-abcdef", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	ssh := exec.CommandContext(ctx, "ssh", "-p", fmt.Sprint(tr.Port), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+tr.KnownHosts, "-o", "BatchMode=yes", "-i", other.KeyPath, "odoo@127.0.0.1", "rsync", "--server", ".", "/data/x")
	if out, err := ssh.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("another request's key on this port: %v %s", err, out)
	}
	// A shell, with the right key, is refused.
	ssh = exec.CommandContext(ctx, "ssh", "-p", fmt.Sprint(tr.Port), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+tr.KnownHosts, "-o", "BatchMode=yes", "-i", c.KeyPath, "odoo@127.0.0.1", "cat /etc/passwd")
	if out, err := ssh.CombinedOutput(); err == nil || strings.Contains(string(out), "root:") {
		t.Errorf("a command other than rsync ran: %v %s", err, out)
	}
	slow.Process.Signal(syscall.SIGKILL)
	slow.Wait()
	refused("stop after the cut rsync", c.Stop(ctx), "did not complete")

	// Over the size limit: the endpoint stops the rsync, nothing is kept.
	huge := filepath.Join(work, "huge.sql")
	f, _ = os.Create(huge)
	f.WriteString("--\n-- PostgreSQL database dump\n--\n")
	f.Write(bytes.Repeat([]byte("-- filler line of a big dump\n"), 2<<20)) // 58 MiB
	f.Close()
	_, err = c.Upload(ctx, huge, "origin.sql")
	if err == nil || !strings.Contains(err.Error(), "larger than this server accepts") {
		t.Errorf("an upload over the limit: %v", err)
	}
	if st, err := c.Status(ctx); err != nil || st["status"] != "new" {
		t.Errorf("after a refused upload: %v %v", st, err)
	}
	// Uploading to a name the client never uses is refused at stop.
	small := filepath.Join(work, "small.sql")
	os.WriteFile(small, []byte("--\n-- PostgreSQL database dump\n--\n"), 0o644)
	_, err = c.Upload(ctx, small, "elsewhere.sql")
	refused("an upload to another name", err, "Upload the dump to /data/origin.dump")

	// The logs: never 416, a Content-Length always.
	for _, rng := range []string{"bytes=0-", "bytes=999999-", "bytes=5-", "nonsense"} {
		req, _ := http.NewRequest("GET", s.url+"/upgrade/request/logs?token="+c.Token, nil)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode != 200 && resp.StatusCode != 206) || resp.Header.Get("Content-Length") == "" {
			t.Errorf("logs with Range %q: HTTP %d, Content-Length %q", rng, resp.StatusCode, resp.Header.Get("Content-Length"))
		}
	}
	if strings.Contains(s.stderr.String(), c.Token) || strings.Contains(s.stderr.String(), other.Token) {
		t.Error("a token appears in the server's log")
	}
}

// TestOdooClientFailedScenario: a scenario contract works through this
// protocol: the request fails with the scenario's reason.
func TestOdooClientFailedScenario(t *testing.T) {
	s := startOdooServer(t, map[string]string{"UPGRADE_ENGINE": "passthrough", "UPGRADE_ADMIN_TOKEN": "admin-secret"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.client(t)
	if _, err := c.Create(ctx, "scenario:fail=Your dump is from the future, sorry", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Upload(ctx, "../../internal/dump/testdata/fixtures/odoo12.sql", "origin.sql"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Process(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.Wait(ctx, 50*time.Millisecond, nil)
	if err != nil || st["status"] != "failed" || st["reason"] != "Your dump is from the future, sorry" || st["archived"] != false {
		t.Fatalf("status: %v %v", st, err)
	}
	// Deleted by an operator: archived, so the script offers no resume;
	// every other call knows the token no more.
	req, _ := http.NewRequest("DELETE", fmt.Sprintf("%s/admin/v1/requests/%d", s.url, c.RequestID), nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("admin delete: HTTP %d", resp.StatusCode)
	}
	st, err = c.Status(ctx)
	if err != nil || st["archived"] != true || st["status"] != "failed" || st["reason"] != "Your dump is from the future, sorry" {
		t.Fatalf("status of a deleted request: %v %v", st, err)
	}
	var er *odooclient.ErrorResult
	if _, err := c.Process(ctx); !errors.As(err, &er) || !strings.Contains(er.Message, "Unknown or invalid token") {
		t.Fatalf("process of a deleted request: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
