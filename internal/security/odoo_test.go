package security_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/odooclient"
)

// newOdooServer starts a whole server with what Odoo's upgrade script
// needs (HTTPS, rsync endpoints); mod changes more settings.
func newOdooServer(t *testing.T, mod func(*app.Config)) *client {
	t.Helper()
	for _, tool := range []string{"rsync", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	return newClientWith(t, func(cfg *app.Config) {
		cfg.HTTPSAddr = "127.0.0.1:0"
		if mod != nil {
			mod(cfg)
		}
	})
}

// odoo is a new run of Odoo's upgrade script against c's server.
func (c *client) odoo() *odooclient.Client {
	c.t.Helper()
	oc, err := odooclient.New(c.srv.URL, c.addrs.CertPath, c.t.TempDir())
	if err != nil {
		c.t.Fatal(err)
	}
	return oc
}

// uploadDir is where request id's rsync upload lands: the work folder in
// the data directory, or the engine's in the system's temporary directory
// when the tools user cannot reach the data directory (as in tests run as
// root in private temporary folders).
func (c *client) uploadDir(id int64) string {
	work := filepath.Join(c.srv.DataDir, "work")
	name := fmt.Sprintf("transfer-%d-upload", id)
	if _, err := os.Stat(filepath.Join(work, name)); err == nil {
		return filepath.Join(work, name)
	}
	sum := sha256.Sum256([]byte(work))
	return filepath.Join(os.TempDir(), "upgrade-server-work-"+hex.EncodeToString(sum[:6]), name)
}

// TestRPCEnvVarsThatRunCode: env_vars reach the command engine, which
// runs the operator's command as the tools user against the hostile
// database. A variable that makes a tool the command runs read a file as
// commands (psql's PSQLRC: "\!" lines run programs) would let the
// request run code of its own there, from a file the upload put in the
// run's folder (an Odoo backup's filestore). Such variables are refused;
// were one accepted, its file must not run.
func TestRPCEnvVarsThatRunCode(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql is needed for this test: %v", err)
	}
	c := newOdooServer(t, func(cfg *app.Config) {
		cfg.Engine = "command"
		cfg.EngineCommand = `psql -At -c "SELECT 'operator command ran'"`
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Refused at create, each of them (a client's variable must not
	// choose a start-up or configuration file, or a program, of the tools
	// the command may run).
	for _, kv := range []string{"PSQLRC=filestore/0a/rc", "psqlrc=x", "PSQL_EDITOR=x", "PSQL_PAGER=x", "PAGER=x",
		"EDITOR=x", "VISUAL=x", "OPENERP_SERVER=x", "KRB5_CONFIG=x", "KRB5CCNAME=x", "LDAPCONF=x", "LDAPRC=x",
		"XDG_CONFIG_HOME=x", "JDK_JAVA_OPTIONS=x", "ZDOTDIR=x", "LUA_INIT=x"} {
		oc := c.odoo()
		var er *odooclient.ErrorResult
		if _, err := oc.Create(ctx, "M-security", "16.0", "test", []string{kv}); !errors.As(err, &er) ||
			!strings.Contains(er.Message, "may not be set") {
			t.Errorf("create with env_vars %s: %v, want a refusal", kv, err)
		}
	}

	// End to end: the variable and a file for it in the upload.
	payload := `\! echo "PSQLRC-PAYLOAD-RAN uid=$(id -u)"` + "\n"
	zipped := withMember(t, fixture(t, "odoo12.odoo-backup.zip"), "filestore/0a/rc", payload)
	src := filepath.Join(t.TempDir(), "origin.zip")
	if err := os.WriteFile(src, zipped, 0o644); err != nil {
		t.Fatal(err)
	}
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", []string{"PSQLRC=filestore/0a/rc"}); err != nil {
		return // refused, as checked above
	}
	if _, err := oc.Upload(ctx, src, "origin.zip"); err != nil {
		t.Fatal(err)
	}
	if st, err := oc.Wait(ctx, 50*time.Millisecond, nil); err != nil {
		t.Fatalf("wait: %v %v", st, err)
	}
	log := strings.Join(c.events(oc.RequestID), "\n")
	if !strings.Contains(log, "operator command ran") {
		t.Fatalf("the operator's command did not run:\n%s", log)
	}
	if strings.Contains(log, "PSQLRC-PAYLOAD-RAN") {
		t.Errorf("the upload's file ran as psql's start-up file:\n%s", log)
	}
}

// withMember returns the zip z with one more member.
func withMember(t *testing.T, z []byte, name, content string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range zr.File {
		if err := zw.Copy(f); err != nil {
			t.Fatal(err)
		}
	}
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, content)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRPCTransferStartRace: transfer/start calls for one request at once
// leave one endpoint listening; the others are refused or replaced, never
// left open outside the server's count (each is a listener, and the count
// is what caps them).
func TestRPCTransferStartRace(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	const n = 12
	ports := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			res, err := oc.Call(ctx, "transfer/start", map[string]any{"token": oc.Token, "transfer_type": "upload"})
			if p, ok := res["ssh_port"].(float64); err == nil && ok {
				ports <- int(p)
			}
		})
	}
	close(start)
	wg.Wait()
	close(ports)
	var open []int
	answered := 0
	for p := range ports {
		answered++
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 2*time.Second); err == nil {
			conn.Close()
			open = append(open, p)
		}
	}
	if answered == 0 || len(open) != 1 {
		t.Fatalf("%d transfer/start answered a port; %d of them still listen (%v), want exactly one", answered, len(open), open)
	}
	if err := oc.Stop(ctx); err == nil || !strings.Contains(err.Error(), "No rsync reached") {
		t.Errorf("transfer/stop: %v", err)
	}
}

// TestRPCUploadFolderEntriesCount: every entry of an rsync upload counts
// against UPGRADE_MAX_UPLOAD_BYTES, not only the bytes of its files:
// folders and empty files take disk space and inodes too, and a folder
// of empty folders must not fill the disk past the limit.
func TestRPCUploadFolderEntriesCount(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, func(cfg *app.Config) { cfg.MaxUploadBytes = 1 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := filepath.Join(t.TempDir(), "origin.dump")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	toc := fixtureMember(t, "odoo12.dir.tar", "toc.dat")
	if err := os.WriteFile(filepath.Join(src, "toc.dat"), toc, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 600 { // 600 folders: 2.4 MB of blocks on most file systems
		if err := os.Mkdir(filepath.Join(src, fmt.Sprintf("d%04d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	_, err := oc.Upload(ctx, src+"/", "origin.dump")
	if err == nil || !strings.Contains(err.Error(), "larger than this server accepts") {
		t.Errorf("an upload of 600 empty folders under a 1 MiB limit: %v", err)
	}
	if st, err := oc.Status(ctx); err != nil || st["status"] != "new" {
		t.Errorf("after the refused upload: %v %v", st, err)
	}
	// Nothing of it is kept (nothing to resume), and the client can send
	// its dump.
	if _, err := os.Stat(c.uploadDir(oc.RequestID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused upload's folder stays: %v", err)
	}
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}
	sql := filepath.Join(t.TempDir(), "origin.sql")
	if err := os.WriteFile(sql, fixture(t, "odoo12.sql"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Upload(ctx, sql, "origin.sql"); err != nil {
		t.Fatalf("an upload within the limit after a refused one: %v", err)
	}
}

// fixtureMember is one member of a tar fixture.
func fixtureMember(t *testing.T, tarName, member string) []byte {
	t.Helper()
	out, err := exec.Command("tar", "-xOf", fixtures+tarName, "--wildcards", "*/"+member).Output()
	if err != nil {
		t.Fatalf("tar %s %s: %v", tarName, member, err)
	}
	return out
}

// TestRPCUploadSwappedBeforeStop: what the tools user (rsync's, and the
// tools' on hostile dumps) can do to an upload folder between the rsync
// and transfer/stop: a link to a file of the server's, a FIFO, a second
// link to a file it does not own. transfer/stop refuses each promptly,
// records nothing, and never reads through them. The test plays the
// tools user (it runs as root, or as the tools user itself).
func TestRPCUploadSwappedBeforeStop(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, nil)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret.sql")
	if err := os.WriteFile(secret, []byte("-- SECRET-OF-THE-SERVER\nSELECT 1;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toc := fixtureMember(t, "odoo12.dir.tar", "toc.dat")
	work := t.TempDir()
	folder := filepath.Join(work, "origin.dump")
	os.MkdirAll(folder, 0o755)
	os.WriteFile(filepath.Join(folder, "toc.dat"), toc, 0o644)
	plain := filepath.Join(work, "origin.sql")
	os.WriteFile(plain, fixture(t, "odoo12.sql"), 0o644)

	for _, tt := range []struct {
		name, src, dest string
		swap            func(t *testing.T, dir string) // dir: the upload folder
		want            string
	}{
		{"origin.sql a link to a server file", plain, "origin.sql", func(t *testing.T, dir string) {
			replaceBy(t, filepath.Join(dir, "origin.sql"), func(p string) error { return os.Symlink(secret, p) })
		}, "neither a file nor a folder"},
		{"origin.sql a FIFO", plain, "origin.sql", func(t *testing.T, dir string) {
			replaceBy(t, filepath.Join(dir, "origin.sql"), func(p string) error { return syscall.Mkfifo(p, 0o644) })
		}, "neither a file nor a folder"},
		{"origin.dump a link to a server folder", folder + "/", "origin.dump", func(t *testing.T, dir string) {
			replaceBy(t, filepath.Join(dir, "origin.dump"), func(p string) error { return os.Symlink(secretDir, p) })
		}, "neither a file nor a folder"},
		{"toc.dat a FIFO", folder + "/", "origin.dump", func(t *testing.T, dir string) {
			replaceBy(t, filepath.Join(dir, "origin.dump", "toc.dat"), func(p string) error { return syscall.Mkfifo(p, 0o644) })
		}, "/data/origin.dump/toc.dat is not a plain file"},
		{"toc.dat a link to a server file", folder + "/", "origin.dump", func(t *testing.T, dir string) {
			replaceBy(t, filepath.Join(dir, "origin.dump", "toc.dat"), func(p string) error { return os.Symlink(secret, p) })
		}, "/data/origin.dump/toc.dat is not a plain file"},
		{"a member hard-linked to a server file", folder + "/", "origin.dump", func(t *testing.T, dir string) {
			if err := os.Link(secret, filepath.Join(dir, "origin.dump", "3001.dat")); err != nil {
				t.Fatal(err)
			}
		}, "has other links"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "has other links" && os.Geteuid() != 0 {
				t.Skip("the tools user is this test's own: only root plays another owner's file")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			oc := c.odoo()
			if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
				t.Fatal(err)
			}
			tr, err := oc.Start(ctx, "upload")
			if err != nil {
				t.Fatal(err)
			}
			if out, err := oc.UploadCommand(ctx, tr, tt.src, tt.dest).CombinedOutput(); err != nil {
				t.Fatalf("rsync: %v\n%s", err, out)
			}
			dir := c.uploadDir(oc.RequestID)
			tt.swap(t, dir)
			sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
			defer scancel()
			stopped := make(chan error, 1)
			go func() { stopped <- oc.Stop(sctx) }()
			select {
			case err = <-stopped:
			case <-time.After(25 * time.Second):
				err = errors.New("transfer/stop hung")
			}
			t.Logf("transfer/stop: %v", err)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("transfer/stop: %v, want a refusal saying %q", err, tt.want)
			}
			// Unblock a server stuck on a FIFO, so that it can stop.
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type()&os.ModeNamedPipe != 0 {
					if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						f.Close()
					}
				}
				return nil
			})
			if st, err := oc.Status(ctx); err != nil || st["status"] != "new" {
				t.Errorf("after the refused upload: %v %v", st, err)
			}
			if b, err := os.ReadFile(secret); err != nil || !strings.Contains(string(b), "SECRET") {
				t.Errorf("the server's file changed: %q %v", b, err)
			}
			if st, err := os.Stat(secret); err != nil || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Nlink > 2 {
				t.Errorf("the server's file: %v %v", st, err)
			}
			assertNoSecretStored(t, c.srv.DataDir)
		})
	}
}

// replaceBy replaces the file at p by what mk makes there.
func replaceBy(t *testing.T, p string, mk func(p string) error) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := mk(p); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecretStored fails if a file of the server's data directory
// holds the secret of TestRPCUploadSwappedBeforeStop or is a link.
func assertNoSecretStored(t *testing.T, data string) {
	t.Helper()
	filepath.WalkDir(filepath.Join(data, "requests"), func(p string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
		case d.Type()&os.ModeSymlink != 0:
			t.Errorf("the store holds a link: %s", p)
		case d.Type().IsRegular():
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("SECRET-OF-THE-SERVER")) {
				t.Errorf("the store holds the server's secret file: %s", p)
			}
		}
		return nil
	})
}

// TestRPCDownloadFolderIsPrivate: while a download is open, its folder
// (hard links to the store's files, which rsync reads as the tools user)
// is closed to every other local user: its path is predictable and the
// work folder above it is traversable.
func TestRPCDownloadFolderIsPrivate(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root plays another local user")
	}
	c := newOdooServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := filepath.Join(t.TempDir(), "odoo12.dir")
	if out, err := exec.Command("tar", "-xf", fixtures+"odoo12.dir.tar", "-C", filepath.Dir(src)).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Upload(ctx, src+"/", "origin.dump"); err != nil {
		t.Fatal(err)
	}
	if st, err := oc.Wait(ctx, 50*time.Millisecond, nil); err != nil || st["status"] != "done" {
		t.Fatalf("the request ended %v (%v)", st, err)
	}
	if _, err := oc.Start(ctx, "download"); err != nil {
		t.Fatal(err)
	}
	defer oc.Stop(ctx)
	toc := filepath.Join(strings.TrimSuffix(c.uploadDir(oc.RequestID), "-upload")+"-download", "upgraded.dump", "toc.dat")
	if _, err := os.Stat(toc); err != nil {
		t.Fatalf("the download holds no toc.dat: %v", err)
	}
	cat := exec.Command("cat", toc)
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 12345, Gid: 12345}}
	if out, err := cat.CombinedOutput(); err == nil {
		t.Errorf("another local user read the download's toc.dat (%d bytes)", len(out))
	}
	// The tools user (rsync's) still reads it: the download works.
	if _, err := oc.Download(ctx, t.TempDir()); err != nil {
		t.Errorf("download: %v", err)
	}
}

// TestRPCHostileCalls: malformed, deep, oversized and mistyped JSON-RPC
// bodies, and tokens in other forms than the one given, each get HTTP 200,
// a Content-Length and one {"result": {"error"}} that echoes nothing of
// the body and says nothing of the request; the log's Range is read
// safely whatever it says.
func TestRPCHostileCalls(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	post := func(call string, body []byte) (int, string) {
		t.Helper()
		resp, err := http.Post(c.srv.URL+"/upgrade/request/"+call, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ContentLength <= 0 || !strings.Contains(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %.40q: Content-Length %d, Content-Type %q", call, body, resp.ContentLength, resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, string(b)
	}
	deep := strings.Repeat(`{"a":`, 200000) + "1" + strings.Repeat("}", 200000)
	for _, body := range []string{
		"", "null", "[]", `"x"`, "{nope", deep, `{"params": ` + deep + `}`,
		`{"params": {"token": ` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}}`,
		`{"params": {"token": {"$ne": null}}}`, `{"params": {"token": ["` + oc.Token + `"]}}`,
		`{"params": {"token": "` + strings.ToUpper(oc.Token) + `"}}`, `{"params": {"token": " ` + oc.Token + `"}}`,
		`{"params": {"token": "` + oc.Token + `\u0000"}}`, `{"params": {"token": "` + oc.Token[:39] + `"}}`,
		`{"params": {"token": "%"}}`, `{"params": {"token": "` + oc.Token + `", "token": "x"}}`,
	} {
		for _, call := range []string{"status", "process", "transfer/start", "transfer/stop"} {
			code, ans := post(call, []byte(body))
			if code != 200 || !strings.Contains(ans, `"error"`) {
				t.Errorf("%s %.60q: HTTP %d %.200s", call, body, code, ans)
			}
			if strings.Contains(ans, oc.Token) || strings.Contains(ans, c.srv.DataDir) || strings.Contains(ans, "$ne") {
				t.Errorf("%s %.60q: the answer echoes the body or a path: %.300s", call, body, ans)
			}
		}
	}
	for _, body := range []string{
		`{"params": {"token": "` + oc.Token + `", "transfer_type": {"x": 1}}}`,
		`{"params": {"token": "` + oc.Token + `", "transfer_type": "upload\u0000"}}`,
		`{"params": {"token": "` + oc.Token + `", "transfer_type": "` + strings.Repeat("\u202e", 5000) + `"}}`,
	} {
		if code, ans := post("transfer/start", []byte(body)); code != 200 || !strings.Contains(ans, `"error"`) || len(ans) > 1000 {
			t.Errorf("transfer/start %.60q: HTTP %d %.200s", body, code, ans)
		}
	}
	// create: wrong types and a request key or token never echoed.
	for _, body := range []string{
		`{"params": {"contract": ["M1"], "target": "16.0", "aim": "test", "ssh_key": "x"}}`,
		`{"params": {"contract": "M1", "target": "16.0", "aim": "test", "ssh_key": "x", "env_vars": "PATH=/tmp"}}`,
		`{"params": {"contract": "M1", "target": "16.0", "aim": "test", "ssh_key": "x", "env_vars": [{"PATH": "/tmp"}]}}`,
		`{"params": {"contract": "M1", "target": "16.0", "aim": "test", "ssh_key": "x", "env_vars": ["A=` + strings.Repeat("x", 20000) + `"]}}`,
	} {
		if code, ans := post("create", []byte(body)); code != 200 || !strings.Contains(ans, `"error"`) || strings.Contains(ans, `"token"`) {
			t.Errorf("create %.60q: HTTP %d %.200s", body, code, ans)
		}
	}
	// The log: any Range, never a 416, never a server error.
	for _, rng := range []string{"bytes=-1", "bytes=-", "bytes=999999999999999999-", "bytes=9999999999999999999999-",
		"bytes=0-0,1-1", "bytes=18446744073709551615-", "bytes=\x00", strings.Repeat("bytes=1-", 1000)} {
		req, _ := http.NewRequest(http.MethodGet, c.srv.URL+"/upgrade/request/logs?token="+oc.Token, nil)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue // refused by the client library itself
		}
		resp.Body.Close()
		if resp.StatusCode != 200 && resp.StatusCode != 206 {
			t.Errorf("logs with Range %.40q: HTTP %d", rng, resp.StatusCode)
		}
	}
	for _, tok := range []string{"", strings.ToUpper(oc.Token), oc.Token + "%00", strings.Repeat("a", 100000)} {
		resp, err := http.Get(c.srv.URL + "/upgrade/request/logs?token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "Unknown or invalid token") {
			t.Errorf("logs with token %.20q: HTTP %d %.200s", tok, resp.StatusCode, b)
		}
	}
}

// folderOf writes files (name -> content; names may hold "/") as a
// folder, the way the script's -d sends a directory dump.
func folderOf(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "origin.dump")
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// unzipped is a zip's files, by base name.
func unzipped(t *testing.T, z []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		out[path.Base(f.Name)], _ = io.ReadAll(rc)
		rc.Close()
	}
	return out
}

// TestRPCFolderDumpTricks: a directory dump sent as a folder (a set of
// files, never packed) goes through the same checks as a zipped one:
// toc.dat and blobs.toc may only name pg_dump's data files of the folder,
// a data file that expands past UPGRADE_MAX_RESTORE_BYTES fails the
// request, and a custom dump posing as toc.dat is refused or restored,
// never more.
func TestRPCFolderDumpTricks(t *testing.T) {
	t.Parallel()
	const limit = 4 << 20
	c := newOdooServer(t, func(cfg *app.Config) {
		cfg.Engine = "builtin"
		cfg.Workers = 4
		cfg.MaxRestoreBytes = limit
	})
	_, files := dirArchive(t)
	data := dataFile(t, files)
	withTOC := func(name string) map[string][]byte {
		out := maps.Clone(files)
		out["toc.dat"] = bytes.ReplaceAll(files["toc.dat"], []byte(data), []byte(name))
		return out
	}
	lo := unzipped(t, pgDumpOf(t, "SELECT lo_from_bytea(0, 'a large object');", "d"))
	lo["blobs.toc"] = regexp.MustCompile(`blob_[0-9]+\.dat`).ReplaceAll(lo["blobs.toc"], []byte("../../../../../../../../etc/passwd"))
	// A table whose data file becomes a bomb of valid rows.
	bomb := unzipped(t, pgDumpOf(t, "CREATE TABLE public.big (s text); INSERT INTO public.big VALUES ('BOMB-MARKER');", "d"))
	for name, body := range bomb {
		if !strings.HasSuffix(name, ".dat.gz") {
			continue
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			continue
		}
		rows, _ := io.ReadAll(zr)
		if !bytes.Contains(rows, []byte("BOMB-MARKER")) {
			continue
		}
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		line := []byte(strings.Repeat("x", 1000) + "\n")
		for range 64 << 10 { // 64 MiB of rows
			zw.Write(line)
		}
		zw.Close()
		bomb[name] = b.Bytes()
	}
	custom := maps.Clone(files)
	custom["toc.dat"] = fixture(t, "odoo12.custom.dump")

	for _, tc := range []struct {
		name  string
		files map[string][]byte
		want  string // in the reason; "" for any end but a hang
	}{
		{"toc.dat names a file above the folder", withTOC("../x.dat"), "not a pg_dump data file name"},
		{"toc.dat names an absolute path", withTOC("/x/y.dat"), "not a pg_dump data file name"},
		{"toc.dat names a file the folder lacks", withTOC("9999.dat"), "lacks 9999.dat"},
		{"blobs.toc names a host file", lo, "not a large object file of the archive"},
		{"a data file that expands past the limit", bomb, "past 4 MiB"},
		{"a custom dump as toc.dat", custom, "toc.dat is not the table of contents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			oc := c.odoo()
			if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := oc.Upload(ctx, folderOf(t, tc.files)+"/", "origin.dump"); err != nil {
				t.Fatal(err)
			}
			st, err := oc.Wait(ctx, 100*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			reason, _ := st["reason"].(string)
			t.Logf("%s: %v", st["status"], reason)
			if tc.want != "" && (st["status"] != "failed" || !strings.Contains(reason, tc.want)) {
				t.Errorf("status %v, reason %q; want failed saying %q", st["status"], reason, tc.want)
			}
			if strings.Contains(reason, "root:") || strings.Contains(reason, c.srv.DataDir) {
				t.Errorf("the reason shows a host file or path: %q", reason)
			}
		})
	}
}

// TestRPCUploadFolderRefusals: a folder sent with what a set may not hold
// (a link, made before the upload and sent with -l; a name with a line
// break or a terminal escape; a hidden file) is refused at transfer/stop
// with its reason, the name shown escaped, no server path, nothing
// recorded.
func TestRPCUploadFolderRefusals(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, nil)
	_, files := dirArchive(t)
	for _, tc := range []struct {
		name string
		add  func(dir string) error
		want string
	}{
		{"a link to /etc/passwd", func(dir string) error { return os.Symlink("/etc/passwd", filepath.Join(dir, "9999.dat")) }, "is a symbolic link"},
		{"a link to a folder", func(dir string) error { return os.Symlink("/etc", filepath.Join(dir, "etc")) }, "is a symbolic link"},
		{"a line break in a name", func(dir string) error { return os.WriteFile(filepath.Join(dir, "a\nb.dat"), nil, 0o644) }, `"a\nb.dat" has a control character`},
		{"a terminal escape in a name", func(dir string) error { return os.WriteFile(filepath.Join(dir, "\x1b[2Jx.dat"), nil, 0o644) }, "has a control character"},
		{"a hidden file", func(dir string) error { return os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o644) }, "is hidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			src := folderOf(t, files)
			if err := tc.add(src); err != nil {
				t.Fatal(err)
			}
			oc := c.odoo()
			if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
				t.Fatal(err)
			}
			_, err := oc.Upload(ctx, src+"/", "origin.dump")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("transfer/stop: %v, want a refusal saying %q", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\n\x1b") || strings.Contains(err.Error(), c.srv.DataDir) || strings.Contains(err.Error(), "/tmp/") {
				t.Errorf("the answer holds a control character or a server path: %q", err)
			}
			if st, err := oc.Status(ctx); err != nil || st["status"] != "new" {
				t.Errorf("after the refused upload: %v %v", st, err)
			}
		})
	}
}

// TestRPCStopThroughAnotherProcess: with two front ends on one database,
// transfer/stop reaching the process that does not run the transfer asks
// the other to stop it (NOTIFY): it stops the caller's transfer, the one
// its token names, and no other request's.
func TestRPCStopThroughAnotherProcess(t *testing.T) {
	t.Parallel()
	var dbURL string
	p1 := newOdooServer(t, func(cfg *app.Config) { dbURL = cfg.DatabaseURL })
	p2 := newOdooServer(t, func(cfg *app.Config) { cfg.DatabaseURL = dbURL })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// a (the victim) and b (the attacker) open their transfers on p1.
	a, b := p1.odoo(), p1.odoo()
	for _, oc := range []*odooclient.Client{a, b} {
		if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
			t.Fatal(err)
		}
	}
	ta, err := a.Start(ctx, "upload")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(ctx, "upload"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "origin.sql")
	os.WriteFile(src, fixture(t, "odoo12.sql"), 0o644)
	if out, err := a.UploadCommand(ctx, ta, src, "origin.sql").CombinedOutput(); err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
	// on p2, the other process
	via := func(oc *odooclient.Client) *odooclient.Client {
		other := p2.odoo()
		other.Token, other.RequestID, other.Base = oc.Token, oc.RequestID, "https://"+p2.addrs.HTTPS.String()
		return other
	}
	if err := via(b).Stop(ctx); err == nil || !strings.Contains(err.Error(), "No rsync reached") {
		t.Fatalf("b's transfer/stop through p2: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ta.Port), 2*time.Second); err != nil {
		t.Fatalf("b's stop closed a's endpoint: %v", err)
	} else {
		conn.Close()
	}
	if st, err := a.Status(ctx); err != nil || st["status"] != "new" {
		t.Fatalf("a after b's stop: %v %v", st, err)
	}
	if err := via(a).Stop(ctx); err != nil {
		t.Fatalf("a's transfer/stop through p2: %v", err)
	}
	if st, err := a.Status(ctx); err != nil || st["status"] == "new" {
		t.Fatalf("a after its stop: %v %v", st, err)
	}
}
