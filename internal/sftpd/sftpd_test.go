package sftpd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/sftpd"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func TestMain(m *testing.M) { pgtest.Exit(m) }

type env struct {
	t     *testing.T
	store *store.Store
	pool  *pgxpool.Pool
	files *files.Store
	root  string
	addr  string
	port  string
	work  string
	srv   *sftpd.Server
}

func newEnv(t *testing.T, mod ...func(*sftpd.Config)) *env {
	t.Helper()
	st, pool := pgtest.NewStore(t)
	e := &env{t: t, store: st, pool: pool, root: t.TempDir(), work: t.TempDir()}
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: e.root})
	if err != nil {
		t.Fatal(err)
	}
	e.files = fs
	keys, err := sftpd.LoadHostKeys(filepath.Join(e.root, "ssh"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := sftpd.Config{HostSigners: keys, Files: fs, UploadLease: 3 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	e.srv, err = sftpd.New(logger, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	_, e.port, _ = net.SplitHostPort(e.addr)
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.srv.Close()
		if err := <-done; !errors.Is(err, sftpd.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// key is a client key pair, saved for OpenSSH in the work dir.
type key struct {
	path   string
	signer gossh.Signer
	line   string
}

func (e *env) newKey(name string) key {
	e.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, name)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.work, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		e.t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		e.t.Fatal(err)
	}
	return key{path: path, signer: signer, line: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey())))}
}

// request creates a draft request granted to k, with its empty shared file.
func (e *env) request(filename string, k key) store.Request {
	e.t.Helper()
	ctx := context.Background()
	r, err := e.store.CreateRequest(ctx, store.NewRequest{Key: "k", Contract: "c", Email: "a@b.example", Target: "16.0", Aim: "test", Filename: filename})
	if err != nil {
		e.t.Fatal(err)
	}
	pk, _, _, _, _ := gossh.ParseAuthorizedKey([]byte(k.line))
	if _, err := e.store.GrantSFTP(ctx, r.ID, []store.SFTPKey{{Fingerprint: gossh.FingerprintSHA256(pk), PublicKey: k.line}},
		time.Hour, store.StateDraft, store.StateDone); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func user(r store.Request) string { return "user_" + strconv.FormatInt(r.ID, 10) }

func (e *env) setState(r store.Request, s store.State) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), `UPDATE requests SET state = $2 WHERE id = $1`, r.ID, s); err != nil {
		e.t.Fatal(err)
	}
}

func sshOpts(k key) []string {
	return []string{"-i", k.path, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"}
}

// sftpBatch runs OpenSSH's sftp with a batch on standard input, as the
// seed's `echo "put …" | sftp -b - -P …` does.
func (e *env) sftpBatch(k key, u, batch string) (string, error) {
	e.t.Helper()
	args := append(sshOpts(k), "-b", "-", "-P", e.port, u+"@127.0.0.1")
	cmd := exec.Command("sftp", args...)
	cmd.Dir = e.work
	cmd.Stdin = strings.NewReader(batch)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// client opens a pkg/sftp client as u with k.
func (e *env) client(k key, u string) (*sftp.Client, error) {
	e.t.Helper()
	conn, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{User: u, Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	c, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	e.t.Cleanup(func() { c.Close(); conn.Close() })
	return c, nil
}

func (e *env) mustClient(k key, u string) *sftp.Client {
	e.t.Helper()
	c, err := e.client(k, u)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func randomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (OpenSSH client) is needed for this test: %v", tool, err)
		}
	}
}

// TestSeedSession runs the seed's session verbatim with OpenSSH's sftp.
func TestSeedSession(t *testing.T) {
	requireTools(t, "sftp")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("openchs.70.cdump", k)
	dump := randomFile(t, filepath.Join(e.work, "openchs.70.cdump"), 849920)

	out, err := e.sftpBatch(k, user(r), "put "+filepath.Join(e.work, "openchs.70.cdump")+" openchs.70.cdump\nls -l openchs.70.cdump\n")
	if err != nil {
		t.Fatalf("put: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Uploading") && !strings.Contains(out, "sftp> put") {
		t.Fatalf("unexpected session: %s", out)
	}
	if !strings.Contains(out, "-rw-rw-rw-") || !strings.Contains(out, " 849920 ") || !strings.Contains(out, "openchs.70.cdump") {
		t.Fatalf("ls -l does not show the file as the seed does:\n%s", out)
	}
	// Resuming a complete file is refused by OpenSSH itself.
	out, _ = e.sftpBatch(k, user(r), "put -a openchs.70.cdump openchs.70.cdump\n")
	if !strings.Contains(out, "destination file same size or larger") {
		t.Fatalf("put -a of a complete file: %s", out)
	}
	// echo "put …" | sftp -b - …
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`echo "put %s openchs.70.cdump" | sftp %s -b - -P %s %s@127.0.0.1`,
		filepath.Join(e.work, "openchs.70.cdump"), strings.Join(sshOpts(k), " "), e.port, user(r)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("piped batch: %v\n%s", err, out)
	}
	got := e.committed(r.ID)
	if !bytes.Equal(got, dump) {
		t.Fatal("the shared file differs from the upload")
	}
	// The session freed the file: the store holds no lease.
	waitFor(t, "the upload lease to be released", func() bool {
		got, _ := e.store.Request(context.Background(), r.ID)
		return !got.Uploading
	})
}

// TestPutKilledThenResume kills OpenSSH's put mid-transfer (SIGKILL: no
// chance to clean up), then put -a at once gives a byte-identical file.
func TestPutKilledThenResume(t *testing.T) {
	requireTools(t, "sftp", "cmp")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	src := filepath.Join(e.work, "db.dump")
	const size = 256 << 20
	randomFile(t, src, size)
	shared := e.stagedFile(r.ID)

	args := append(sshOpts(k), "-b", "-", "-P", e.port, user(r)+"@127.0.0.1")
	cmd := exec.Command("sftp", append([]string{"-l", "400000"}, args...)...) // 400 Mbit/s: slow enough to kill mid-way
	cmd.Stdin = strings.NewReader("put " + src + " db.dump\n")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload to pass 32 MiB", func() bool {
		st, err := os.Stat(shared)
		return err == nil && st.Size() > 32<<20
	})
	cmd.Process.Kill()
	cmd.Wait()
	// put -a at once, whether or not the daemon has seen the drop yet: it
	// takes the upload over.
	out, err := e.sftpBatch(k, user(r), "put -a "+src+" db.dump\n")
	if err != nil {
		t.Fatalf("put -a: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Resuming upload") && !strings.Contains(out, "put -a") {
		t.Fatalf("put -a output: %s", out)
	}
	if out, err := exec.Command("cmp", src, e.committedPath(r.ID)).CombinedOutput(); err != nil {
		t.Fatalf("resumed upload differs: %s", out)
	}
	if got := e.recorded(r); got.UploadSize == nil || *got.UploadSize != size {
		t.Fatalf("the resumed upload is not recorded: %+v", got)
	}
}

// TestForbiddenOperations: everything but the one file answers "permission
// denied" and changes nothing.
func TestForbiddenOperations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	c := e.mustClient(k, user(r))
	f, err := c.Create("db.dump")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("hello"))
	f.Close()
	before := listTree(t, e.root)

	ops := []struct {
		name string
		op   func() error
	}{
		{"create another name", func() error { _, err := c.Create("other.dump"); return err }},
		{"open another name", func() error { _, err := c.Open("other.dump"); return err }},
		{"absolute path elsewhere", func() error { _, err := c.Open("/etc/passwd"); return err }},
		{"dot-dot", func() error { _, err := c.Open("../" + strconv.FormatInt(r.ID, 10) + "/upload"); return err }},
		{"dot-dot create", func() error { _, err := c.Create("../../x"); return err }},
		{"storage name", func() error { _, err := c.Open("upload"); return err }},
		{"mkdir", func() error { return c.Mkdir("d") }},
		{"rmdir", func() error { return c.RemoveDirectory("/") }},
		{"remove", func() error { return c.Remove("db.dump") }},
		{"rename", func() error { return c.Rename("db.dump", "x.dump") }},
		{"posix rename", func() error { return c.PosixRename("db.dump", "x.dump") }},
		{"symlink", func() error { return c.Symlink("db.dump", "link") }},
		{"hard link", func() error { return c.Link("db.dump", "link") }},
		{"chmod", func() error { return c.Chmod("db.dump", 0o777) }},
		{"chown", func() error { return c.Chown("db.dump", 1, 1) }},
		{"chtimes", func() error { return c.Chtimes("db.dump", time.Now(), time.Now()) }},
		{"stat another name", func() error { _, err := c.Stat("other.dump"); return err }},
		{"list a subfolder", func() error { _, err := c.ReadDir("/sub"); return err }},
		{"readlink", func() error { _, err := c.ReadLink("db.dump"); return err }},
	}
	for _, op := range ops {
		if err := op.op(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s: err = %v, want permission denied", op.name, err)
		}
	}
	if after := listTree(t, e.root); after != before {
		t.Fatalf("a refused operation changed the data dir:\n%s\n---\n%s", before, after)
	}
	// What is allowed: the one file, at any offset, truncation, listing.
	entries, err := c.ReadDir("/")
	if err != nil || len(entries) != 1 || entries[0].Name() != "db.dump" || entries[0].Size() != 5 {
		t.Fatalf("ReadDir = %v, %v", entries, err)
	}
	f, err = c.OpenFile("/db.dump", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XY"), 10)
	if err := f.Truncate(8); err != nil {
		t.Fatalf("fsetstat size: %v", err)
	}
	b := make([]byte, 8)
	n, _ := f.ReadAt(b, 0)
	f.Close()
	if n != 8 || string(b) != "hello\x00\x00\x00" {
		t.Fatalf("read back %q", b[:n])
	}
	if p, err := c.RealPath("../../etc"); err != nil || p != "/etc" {
		t.Fatalf("realpath = %q, %v", p, err)
	}
	if err := c.Truncate("db.dump", 2); err != nil {
		t.Fatalf("setstat size: %v", err)
	}
	if got, _ := os.ReadFile(e.stagedFile(r.ID)); string(got) != "he" {
		t.Fatalf("after truncation: %q", got)
	}
}

// committed reads the request's recorded upload from the store.
func (e *env) committed(id int64) []byte {
	e.t.Helper()
	p := e.committedPath(id)
	if p == "" {
		return nil
	}
	b, _ := os.ReadFile(p)
	return b
}

// committedPath is where the file store keeps the recorded upload.
func (e *env) committedPath(id int64) string {
	e.t.Helper()
	r, err := e.store.Request(context.Background(), id)
	if err != nil || r.UploadName == nil {
		return ""
	}
	return filepath.Join(e.root, "requests", strconv.FormatInt(id, 10), *r.UploadName)
}

// stagedFile is where SFTP writes an upload until it is recorded.
func (e *env) stagedFile(id int64) string {
	e.t.Helper()
	p, err := e.files.StagePath(id, files.Upload)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// setUpload records data as the request's complete upload.
func (e *env) setUpload(r store.Request, data []byte) {
	e.t.Helper()
	ctx := context.Background()
	name := files.NewUploadName()
	if err := e.files.WriteFile(ctx, r.ID, name, data); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.store.TakeUpload(ctx, r.ID, "setup", time.Minute, false); err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.store.CompleteUpload(ctx, r.ID, "setup", store.Upload{Name: string(name), Size: int64(len(data)), SHA256: "x"}); err != nil {
		e.t.Fatal(err)
	}
}

func listTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %d %v\n", p, fi.Size(), fi.Mode())
		}
		return nil
	})
	return b.String()
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("mine")
	other := e.newKey("other")
	r := e.request("db.dump", k)
	r2 := e.request("db2.dump", other)
	if _, err := e.client(k, user(r)); err != nil {
		t.Fatalf("the granted key: %v", err)
	}
	for _, tc := range []struct {
		name string
		k    key
		user string
	}{
		{"wrong key", e.newKey("stranger"), user(r)},
		{"another request's key", other, user(r)},
		{"wrong user", k, "root"},
		{"unknown request", k, "user_999999"},
		{"padded id", k, "user_0" + strconv.FormatInt(r.ID, 10)},
	} {
		if _, err := e.client(tc.k, tc.user); err == nil {
			t.Errorf("%s: logged in", tc.name)
		}
	}
	// Password and keyboard-interactive never succeed.
	_, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{User: user(r), HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Auth: []gossh.AuthMethod{gossh.Password("k"), gossh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
			return []string{"k"}, nil
		})}})
	if err == nil {
		t.Error("password login succeeded")
	}
	// An expired grant and a state that forbids SFTP.
	if _, err := e.pool.Exec(context.Background(), `UPDATE requests SET sftp_expires_at = now() - interval '1 second' WHERE id = $1`, r2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(other, user(r2)); err == nil {
		t.Error("an expired grant let its key in")
	}
	e.setState(r, store.StateFailed)
	if _, err := e.client(k, user(r)); err == nil {
		t.Error("a failed request's grant let its key in")
	}
}

func TestShellExecAndForwardingRefused(t *testing.T) {
	requireTools(t, "ssh")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	for _, args := range [][]string{{"ls"}, {}} {
		cmd := exec.Command("ssh", append(append(sshOpts(k), "-p", e.port, user(r)+"@127.0.0.1"), args...)...)
		cmd.Stdin = strings.NewReader("")
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("ssh %v hung", args)
		}
		if err == nil || !strings.Contains(string(out), "request failed") {
			t.Errorf("ssh %v: err=%v out=%s", args, err, out)
		}
	}
	conn, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{User: user(r), Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if c, err := conn.Dial("tcp", "127.0.0.1:22"); err == nil {
		c.Close()
		t.Error("local port forwarding was allowed")
	}
	if _, err := conn.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("remote port forwarding was allowed")
	}
	sess, err := conn.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if ok, _ := sess.SendRequest("auth-agent-req@openssh.com", true, nil); ok {
		t.Error("agent forwarding was accepted")
	}
	if ok, _ := sess.SendRequest("x11-req", true, gossh.Marshal(struct {
		Single   bool
		Protocol string
		Cookie   string
		Screen   uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0})); ok {
		t.Error("X11 forwarding was accepted")
	}
}

// TestScpReportsSuccess: scp (SFTP mode since OpenSSH 9) gets exit-status 0.
func TestScpReportsSuccess(t *testing.T) {
	requireTools(t, "scp")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	src := filepath.Join(e.work, "local.dump")
	data := randomFile(t, src, 3<<20)
	args := append(sshOpts(k), "-P", e.port, src, user(r)+"@127.0.0.1:db.dump")
	if out, err := exec.Command("scp", args...).CombinedOutput(); err != nil {
		t.Fatalf("scp: %v\n%s", err, out)
	}
	if got := e.committed(r.ID); !bytes.Equal(got, data) {
		t.Fatal("scp upload differs")
	}
}

func TestReadOnlyAfterProcessAndDownload(t *testing.T) {
	requireTools(t, "sftp", "cmp")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	e.setUpload(r, []byte("original"))
	e.setState(r, store.StateQueued)
	c := e.mustClient(k, user(r))
	if _, err := c.OpenFile("db.dump", os.O_WRONLY); err == nil {
		t.Fatal("writing after process was allowed")
	}
	if err := c.Truncate("db.dump", 0); err == nil {
		t.Fatal("truncating after process was allowed")
	}
	f, err := c.Open("db.dump")
	if err != nil {
		t.Fatalf("reading after process: %v", err)
	}
	f.Close()

	// done: only upgraded_<filename>, read-only, resumable.
	upgraded := randomFile(t, filepath.Join(e.work, "upgraded"), 5<<20+17)
	if err := e.files.WriteFile(context.Background(), r.ID, files.UpgradedArchive, upgraded); err != nil {
		t.Fatal(err)
	}
	e.setState(r, store.StateDone)
	entries, err := c.ReadDir("/")
	if err != nil || len(entries) != 1 || entries[0].Name() != "upgraded_db.dump" || entries[0].Mode().Perm() != 0o444 {
		t.Fatalf("ReadDir when done = %v, %v", entries, err)
	}
	if _, err := c.Open("db.dump"); err == nil {
		t.Fatal("the upload is still visible when done")
	}
	if _, err := c.OpenFile("upgraded_db.dump", os.O_WRONLY); err == nil {
		t.Fatal("the upgraded file is writable")
	}
	dst := filepath.Join(e.work, "upgraded_db.dump")
	out, err := e.sftpBatch(k, user(r), "get upgraded_db.dump "+dst+"\n")
	if err != nil {
		t.Fatalf("get: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, upgraded) {
		t.Fatal("get: the download differs")
	}
	os.WriteFile(dst, upgraded[:1<<20], 0o600) // an interrupted download
	out, err = e.sftpBatch(k, user(r), "reget upgraded_db.dump "+dst+"\n")
	if err != nil || !strings.Contains(out, "reget") {
		t.Fatalf("reget: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, upgraded) {
		t.Fatal("reget: the resumed download differs")
	}
}

// TestNewWriterTakesOver: a write handle of another session takes the
// upload over at once: the first session's connection is closed and
// nothing it writes lands; within one session a second write handle is
// refused. An HTTP upload cannot begin meanwhile, nor can process.
func TestNewWriterTakesOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	c1 := e.mustClient(k, user(r))
	c2 := e.mustClient(k, user(r))
	f, err := c1.OpenFile("db.dump", os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.OpenFile("db.dump", os.O_WRONLY); err == nil {
		t.Fatal("a second writer of one session was allowed")
	}
	if err := e.store.BeginUpload(context.Background(), r.ID, "http", time.Minute); !errors.Is(err, store.ErrUploadBusy) {
		t.Fatalf("a lease taken without takeover during an SFTP write: %v", err)
	}
	if _, err := e.store.Process(context.Background(), r.ID); !errors.Is(err, store.ErrUploadBusy) {
		t.Fatalf("process during an SFTP write: %v", err)
	}
	g, err := c2.OpenFile("db.dump", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatalf("a new session could not take over: %v", err)
	}
	if _, err := f.WriteAt([]byte("stale"), 100); err == nil {
		t.Fatal("the replaced writer could still write")
	}
	closed := make(chan error, 1)
	go func() { closed <- c1.Wait() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced writer's connection is still open")
	}
	if _, err := g.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if b := e.committed(r.ID); string(b) != "second" {
		t.Fatalf("the upload holds %q", b)
	}
	got, _ := e.store.Request(context.Background(), r.ID)
	if got.Uploading || got.UploadSize == nil || *got.UploadSize != 6 {
		t.Fatalf("after the new writer closed: %+v", got)
	}
}

// TestNoLeaks opens thousands of sessions and counts goroutines and open
// files before and after.
func TestNoLeaks(t *testing.T) {
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	session := func() {
		conn, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{User: user(r), Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey()})
		if err != nil {
			t.Fatal(err)
		}
		c, err := sftp.NewClient(conn)
		if err != nil {
			t.Fatal(err)
		}
		f, err := c.OpenFile("db.dump", os.O_WRONLY)
		if err == nil {
			f.Write([]byte("x"))
			f.Close()
		}
		g, err := c.Open("db.dump")
		if err == nil {
			g.Close()
		}
		c.Close()
		conn.Close()
	}
	for range 20 { // warm up pools
		session()
	}
	settle := func() (int, int) {
		var g, f int
		for range 200 {
			g, f = runtimeGoroutines(), openFiles(t)
			time.Sleep(10 * time.Millisecond)
			if g2, f2 := runtimeGoroutines(), openFiles(t); g2 == g && f2 == f {
				break
			}
		}
		return g, f
	}
	g0, f0 := settle()
	const n = 2000
	for range n {
		session()
	}
	g1, f1 := settle()
	t.Logf("after %d sessions: goroutines %d -> %d, open files %d -> %d", n, g0, g1, f0, f1)
	if g1 > g0+5 || f1 > f0+5 {
		t.Fatalf("leak after %d sessions: goroutines %d -> %d, open files %d -> %d", n, g0, g1, f0, f1)
	}
}

func openFiles(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleConnectionsClose: a connection without traffic is closed after
// IdleTimeout.
func TestIdleConnectionsClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *sftpd.Config) { c.IdleTimeout = 300 * time.Millisecond })
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	conn, err := gossh.Dial("tcp", e.addr, &gossh.ClientConfig{User: user(r), Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := make(chan error, 1)
	go func() { closed <- conn.Wait() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("an idle connection stayed open")
	}
}

// TestFailedLoginsAreSlowedDown: after three failures from one address,
// each further attempt waits.
func TestFailedLoginsAreSlowedDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	stranger := e.newKey("stranger")
	r := e.request("db.dump", k)
	attempt := func() time.Duration {
		start := time.Now()
		if _, err := e.client(stranger, user(r)); err == nil {
			t.Fatal("a stranger logged in")
		}
		return time.Since(start)
	}
	first := attempt()
	for range 3 {
		attempt()
	}
	slowed := attempt()
	if slowed < 250*time.Millisecond || slowed < first+200*time.Millisecond {
		t.Fatalf("the 5th failure took %s (the first %s): not slowed down", slowed, first)
	}
	// The right key still gets in (and clears the record).
	if _, err := e.client(k, user(r)); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownBeforeServe: a shutdown that comes before Serve has begun
// (a server stopped as soon as it started) still makes Serve return.
func TestShutdownBeforeServe(t *testing.T) {
	t.Parallel()
	st, _ := pgtest.NewStore(t)
	keys, err := sftpd.LoadHostKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sftpd.New(slog.New(slog.NewTextHandler(io.Discard, nil)), st, sftpd.Config{HostSigners: keys, Files: fs})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		if !errors.Is(err, sftpd.ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		srv.Close()
		ln.Close()
		t.Fatal("Serve kept serving after Shutdown")
	}
}
