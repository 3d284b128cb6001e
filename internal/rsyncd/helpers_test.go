package rsyncd_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// clientKeys are made once per test binary with ssh-keygen, as the
// upgrade client makes its key (-t rsa -N ""), plus a key the server
// never accepts.
var clientKeys struct {
	once       sync.Once
	dir        string
	good, bad  string // private key paths
	goodPublic gossh.PublicKey
	err        error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if clientKeys.dir != "" {
		os.RemoveAll(clientKeys.dir)
	}
	os.Exit(code)
}

func requireTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"rsync", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install rsync openssh-client)", tool)
		}
	}
}

func keys(t testing.TB) (good, bad string, pub gossh.PublicKey) {
	t.Helper()
	requireTools(t)
	k := &clientKeys
	k.once.Do(func() {
		k.dir, k.err = os.MkdirTemp("", "rsyncd-keys-")
		if k.err != nil {
			return
		}
		k.good, k.bad = filepath.Join(k.dir, "upgrade_ssh_key"), filepath.Join(k.dir, "other_key")
		for _, c := range [][]string{
			{"-q", "-t", "rsa", "-N", "", "-f", k.good},
			{"-q", "-t", "ed25519", "-N", "", "-f", k.bad},
		} {
			if out, err := exec.Command("ssh-keygen", c...).CombinedOutput(); err != nil {
				k.err = fmt.Errorf("ssh-keygen: %v: %s", err, out)
				return
			}
		}
		b, err := os.ReadFile(k.good + ".pub")
		if err != nil {
			k.err = err
			return
		}
		k.goodPublic, _, _, _, k.err = gossh.ParseAuthorizedKey(b)
	})
	if k.err != nil {
		t.Fatal(k.err)
	}
	return k.good, k.bad, k.goodPublic
}

// hostSigners makes an ed25519 and an ECDSA host key, as sftpd.LoadHostKeys
// does.
func hostSigners(t testing.TB) []gossh.Signer {
	t.Helper()
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var out []gossh.Signer
	for _, k := range []any{ed, ec} {
		s, err := gossh.NewSignerFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// env is one test's server and folders: root (0755, the server's side)
// holds canary, a file no transfer may touch, and data, the transfer
// folder; work is the client's side.
type env struct {
	t      *testing.T
	srv    *rsyncd.Server
	root   string
	data   string
	canary string
	work   string
	key    string // the client's private key
	badKey string
	pub    gossh.PublicKey
}

func newEnv(t *testing.T, mod ...func(*rsyncd.Config)) *env {
	t.Helper()
	good, bad, pub := keys(t)
	root, err := os.MkdirTemp("", "rsyncd-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, data: filepath.Join(root, "data"), canary: filepath.Join(root, "canary"),
		work: t.TempDir(), key: good, badKey: bad, pub: pub}
	if err := os.Mkdir(e.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.canary, []byte("canary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := rsyncd.Config{HostSigners: hostSigners(t), ListenHost: "127.0.0.1"}
	for _, m := range mod {
		m(&cfg)
	}
	e.srv, err = rsyncd.New(testLogger(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close() })
	return e
}

func (e *env) open(d rsyncd.Direction) *rsyncd.Endpoint {
	e.t.Helper()
	ep, err := e.srv.Open(rsyncd.Transfer{RequestID: 42, Direction: d, Key: e.pub, Dir: e.data})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ep.Close() })
	return ep
}

// knownHosts writes ep's known_hosts text for 127.0.0.1, as the client
// does with transfer/start's answer.
func (e *env) knownHosts(ep *rsyncd.Endpoint) string {
	e.t.Helper()
	path := filepath.Join(e.work, "known_hosts_"+strconv.Itoa(ep.Port()))
	if err := os.WriteFile(path, []byte(ep.KnownHosts("127.0.0.1")), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// sshCommand is the client's -e value.
func (e *env) sshCommand(ep *rsyncd.Endpoint) string {
	return fmt.Sprintf("ssh -p %d -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -i %s",
		ep.Port(), e.knownHosts(ep), e.key)
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run runs a client tool with a time limit; a start failure fails the test.
func (e *env) run(name string, args ...string) result {
	e.t.Helper()
	cmd := e.command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%s: %v", name, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (e *env) command(name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.work
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// clientArgs is the client's rsync command line (the reference's), with
// extra options before the operands.
func (e *env) clientArgs(ep *rsyncd.Endpoint, extra []string, operands ...string) []string {
	args := []string{"--chmod=u+rwx,g+rwx,o+r", "--info=progress2", "--delete-after", "-are", e.sshCommand(ep)}
	args = append(args, extra...)
	return append(args, operands...)
}

// rsync runs the client's rsync command.
func (e *env) rsync(ep *rsyncd.Endpoint, extra []string, operands ...string) result {
	e.t.Helper()
	return e.run("rsync", e.clientArgs(ep, extra, operands...)...)
}

// remote is the client's remote operand for /data/<rel>.
func remote(rel string) string { return "odoo@127.0.0.1:/data/" + rel }

// ssh runs OpenSSH's client against ep with key and the given options,
// destination and command.
func (e *env) ssh(ep *rsyncd.Endpoint, key string, args ...string) result {
	e.t.Helper()
	base := []string{"-p", strconv.Itoa(ep.Port()), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + e.knownHosts(ep), "-o", "BatchMode=yes", "-i", key}
	return e.run("ssh", append(base, args...)...)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// tree describes the files under dir: regular files by content hash,
// links by target, folders as "dir". Names in skip (relative) are left
// out with what they hold.
func tree(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "." {
			return nil
		}
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = "dir"
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %d %s", len(b), hex.EncodeToString(sum[:8]))
		default:
			out[rel] = "special " + d.Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDone waits up to d for ep to close (d = 0: it must be closed).
func waitDone(t *testing.T, ep *rsyncd.Endpoint, d time.Duration) {
	t.Helper()
	select {
	case <-ep.Done():
		return
	default:
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ep.Done():
	case <-timer.C:
		t.Fatalf("endpoint on port %d still open after %v", ep.Port(), d)
	}
}

// processesIn lists the processes whose working directory is dir or
// under it.
func processesIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}
