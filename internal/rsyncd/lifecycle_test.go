package rsyncd_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// background is a client rsync running in the background.
type background struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func (e *env) startRsync(ep *rsyncd.Endpoint, extra []string, operands ...string) *background {
	e.t.Helper()
	b := &background{cmd: e.command("rsync", e.clientArgs(ep, extra, operands...)...)}
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (b *background) wait() result {
	err := b.cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = -1
		}
	}
	return result{stdout: b.stdout.String(), stderr: b.stderr.String(), code: code}
}

// tempFile returns the name of rsync's temporary for name in dir
// (".<name>.XXXXXX") once it holds at least n bytes, or "".
func tempFile(dir, name string, n int64) string {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "."+name+".") {
			if fi, err := e.Info(); err == nil && fi.Size() >= n {
				return e.Name()
			}
		}
	}
	return ""
}

// TestInterruptedUpload kills the client rsync (SIGKILL) in the middle of
// a dump folder's large file, then re-runs the client's command: the dump
// lands byte-identical, and the file completed before the kill was not
// sent again. Between the runs the folder holds the completed files and,
// at most, rsync's ".<name>.XXXXXX" temporary, never a partial file under
// its own name.
func TestInterruptedUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.dump")
	dumpDir(t, src, 8<<20)
	dest := filepath.Join(e.data, "origin.dump")

	// --bwlimit (KiB/s) keeps the first run in the large file long enough
	// to kill it there.
	first := e.startRsync(ep, []string{"--bwlimit=2048"}, src+"/", remote("origin.dump"))
	waitFor(t, "the large file's temporary", 30*time.Second, func() bool { return tempFile(dest, "3002.dat.gz", 1<<20) != "" })
	first.cmd.Process.Signal(syscall.SIGKILL)
	r := first.wait()
	if r.code == 0 {
		t.Fatalf("the killed rsync succeeded: %s", r)
	}
	waitFor(t, "the server's rsync to end", 30*time.Second, func() bool { res := ep.Result(); return !res.Running && res.Sessions == 1 })
	if res := ep.Result(); res.OK {
		t.Errorf("Result after the kill = %+v, want not OK", res)
	}
	between := names(t, dest)
	t.Logf("between the runs: %q", between)
	done, err := os.Stat(filepath.Join(dest, "3001.dat.gz"))
	if err != nil {
		t.Fatalf("the file sent before the kill is missing: %v", err)
	}
	for _, n := range between {
		if n != "3001.dat.gz" && !strings.HasPrefix(n, ".3002.dat.gz.") {
			t.Errorf("between the runs the folder holds %q", n)
		}
	}

	if r := e.rsync(ep, nil, src+"/", remote("origin.dump")); r.code != 0 {
		t.Fatalf("re-run: %s", r)
	}
	if diff := cmp.Diff(tree(t, src), tree(t, dest)); diff != "" {
		t.Errorf("after the re-run (-sent +received):\n%s", diff)
	}
	again, err := os.Stat(filepath.Join(dest, "3001.dat.gz"))
	if err != nil || !os.SameFile(done, again) {
		t.Errorf("the file completed before the kill was written again (%v)", err)
	}
	if res := ep.Result(); !res.OK || res.Sessions != 2 {
		t.Errorf("Result = %+v", res)
	}
}

// TestReplacedRsync starts a second rsync while a first runs on the same
// endpoint (a client re-run after losing its connection): the first is
// killed with a message, the second completes. The killed rsync's
// temporary stays beside a single file; in a folder upload, the re-run's
// --delete-after removes it.
func TestReplacedRsync(t *testing.T) {
	t.Parallel()
	for _, folder := range []bool{false, true} {
		t.Run("folder="+strconv.FormatBool(folder), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ep := e.open(rsyncd.Upload)
			src, name, from, to, tmpDir := filepath.Join(e.work, "origin.sql"), "origin.sql", "", remote("origin.sql"), e.data
			if folder {
				src, name, to, tmpDir = filepath.Join(e.work, "origin.dump"), "3002.dat.gz", remote("origin.dump"), filepath.Join(e.data, "origin.dump")
				dumpDir(t, src, 4<<20)
				from = src + "/"
			} else {
				writeFile(t, src, randomBytes(t, 4<<20))
				from = src
			}
			first := e.startRsync(ep, []string{"--bwlimit=512"}, from, to)
			waitFor(t, "the first rsync's temporary", 30*time.Second, func() bool { return tempFile(tmpDir, name, 1) != "" })
			if r := e.rsync(ep, nil, from, to); r.code != 0 {
				t.Fatalf("second rsync: %s", r)
			}
			r := first.wait()
			if r.code == 0 || !strings.Contains(r.stderr, "a newer rsync on the same transfer replaced this one") {
				t.Errorf("first rsync: %s", r)
			}
			if res := ep.Result(); !res.OK || res.Sessions != 2 {
				t.Errorf("Result = %+v", res)
			}
			got := tree(t, e.data)
			if folder {
				if diff := cmp.Diff(tree(t, src), tree(t, filepath.Join(e.data, "origin.dump"))); diff != "" {
					t.Errorf("(-sent +received):\n%s", diff)
				}
			} else {
				if got["origin.sql"] != tree(t, e.work)["origin.sql"] {
					t.Errorf("origin.sql differs")
				}
				if tempFile(e.data, "origin.sql", 0) == "" {
					t.Errorf("no temporary left: %q", names(t, e.data))
				}
			}
			t.Logf("left: %q", got)
		})
	}
}

// TestCloseKillsRsync closes an endpoint while an rsync runs: Close waits
// StopGrace, kills the rsync (no process is left in the folder), tells
// the client, and returns. A killed rsync leaves its temporary behind.
func TestCloseKillsRsync(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	e := newEnv(t, func(c *rsyncd.Config) { c.StopGrace = grace })
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.sql")
	writeFile(t, src, randomBytes(t, 8<<20))
	client := e.startRsync(ep, []string{"--bwlimit=256"}, src, remote("origin.sql"))
	waitFor(t, "the temporary", 30*time.Second, func() bool { return tempFile(e.data, "origin.sql", 1) != "" })
	if res := ep.Result(); !res.Running {
		t.Fatalf("Result = %+v, want Running", res)
	}
	start := time.Now()
	ep.Close()
	took := time.Since(start)
	if took < grace || took > grace+5*time.Second {
		t.Errorf("Close took %v, want StopGrace (%v) and a little", took, grace)
	}
	waitDone(t, ep, 0)
	if p := processesIn(t, e.data); len(p) > 0 {
		t.Errorf("processes left in the transfer folder: %q", p)
	}
	r := client.wait()
	if r.code == 0 || !strings.Contains(r.stderr, "the transfer was closed by the server") {
		t.Errorf("client: %s", r)
	}
	res := ep.Result()
	if res.OK || res.Running || !strings.Contains(res.Err, "killed") {
		t.Errorf("Result = %+v", res)
	}
	if tmp := tempFile(e.data, "origin.sql", 0); tmp == "" {
		t.Errorf("no temporary left: %q", names(t, e.data))
	}
	if _, err := os.Stat(filepath.Join(e.data, "origin.sql")); err == nil {
		t.Error("a partial origin.sql")
	}
}

// TestKillStopsRsyncAtOnce: Kill does not wait StopGrace; the client
// hears the reason.
func TestKillStopsRsyncAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *rsyncd.Config) { c.StopGrace = time.Minute })
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.sql")
	writeFile(t, src, randomBytes(t, 8<<20))
	client := e.startRsync(ep, []string{"--bwlimit=256"}, src, remote("origin.sql"))
	waitFor(t, "the temporary", 30*time.Second, func() bool { return tempFile(e.data, "origin.sql", 1) != "" })
	start := time.Now()
	ep.Kill("the upload is larger than this server accepts")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Kill took %v", took)
	}
	if p := processesIn(t, e.data); len(p) > 0 {
		t.Errorf("processes left in the transfer folder: %q", p)
	}
	if r := client.wait(); r.code == 0 || !strings.Contains(r.stderr, "larger than this server accepts") {
		t.Errorf("client: %s", r)
	}
	if res := ep.Result(); res.OK || res.Running {
		t.Errorf("Result = %+v", res)
	}
}

// TestIdleClose: an endpoint without connections closes itself after
// IdleTimeout; one whose client keeps a transfer going longer than that
// stays open until the transfer ends, then closes.
func TestIdleClose(t *testing.T) {
	t.Parallel()
	const idle = 1500 * time.Millisecond
	e := newEnv(t, func(c *rsyncd.Config) { c.IdleTimeout = idle })
	unused := e.open(rsyncd.Upload)
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.sql")
	writeFile(t, src, randomBytes(t, 3<<20))
	start := time.Now()
	r := e.rsync(ep, []string{"--bwlimit=1024"}, src, remote("origin.sql"))
	if r.code != 0 {
		t.Fatalf("rsync: %s", r)
	}
	if took := time.Since(start); took < idle {
		t.Fatalf("the transfer took %v, less than the idle limit: it proves nothing", took)
	}
	select {
	case <-ep.Done():
		t.Fatal("the endpoint closed during a transfer")
	default:
	}
	waitDone(t, unused, 10*time.Second)
	waitDone(t, ep, 10*time.Second)
}

// TestPorts: endpoints take distinct ports of the range, ErrNoPort when
// all are taken, and a closed endpoint's port is given out again.
func TestPorts(t *testing.T) {
	t.Parallel()
	first := freePorts(t, 2)
	e := newEnv(t, func(c *rsyncd.Config) { c.Ports = rsyncd.PortRange{First: first, Last: first + 1} })
	tr := rsyncd.Transfer{RequestID: 1, Direction: rsyncd.Upload, Key: e.pub, Dir: e.data}
	a, err := e.srv.Open(tr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.srv.Open(tr)
	if err != nil {
		t.Fatal(err)
	}
	if a.Port() == b.Port() || a.Port() < first || a.Port() > first+1 || b.Port() < first || b.Port() > first+1 {
		t.Errorf("ports %d and %d, want both of %d-%d", a.Port(), b.Port(), first, first+1)
	}
	if _, err := e.srv.Open(tr); !errors.Is(err, rsyncd.ErrNoPort) {
		t.Errorf("third Open: %v, want ErrNoPort", err)
	}
	a.Close()
	c, err := e.srv.Open(tr)
	if err != nil {
		t.Fatalf("Open after a Close: %v", err)
	}
	if c.Port() != a.Port() {
		t.Errorf("port %d, want the freed %d", c.Port(), a.Port())
	}
	b.Close()
	c.Close()
}

// freePorts finds n consecutive free ports below the system's ephemeral
// range, so that no other test's connection takes one meanwhile.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		first := 20000 + rand.IntN(10000)
		ok := true
		var lns []net.Listener
		for p := first; p < first+n; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatal("no free ports")
	return 0
}

// TestServerClose closes every endpoint and refuses new ones.
func TestServerClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.open(rsyncd.Upload), e.open(rsyncd.Download)
	if a.Port() == b.Port() {
		t.Errorf("two endpoints on port %d", a.Port())
	}
	e.srv.Close()
	waitDone(t, a, 0)
	waitDone(t, b, 0)
	if _, err := e.srv.Open(rsyncd.Transfer{Direction: rsyncd.Upload, Key: e.pub, Dir: e.data}); !errors.Is(err, rsyncd.ErrServerClosed) {
		t.Errorf("Open after Close: %v", err)
	}
}

// TestLoginGrace: a connection that does not authenticate is closed after
// LoginGrace.
func TestLoginGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *rsyncd.Config) { c.LoginGrace = 300 * time.Millisecond })
	ep := e.open(rsyncd.Upload)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ep.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (the connection was not closed)", err)
	}
	if !strings.HasPrefix(string(b), "SSH-2.0-upgrade-server") {
		t.Errorf("read %q", b)
	}
}

// TestCredential runs rsync as nobody, in a folder nobody owns inside a
// folder it can only traverse: the upload lands, owned by nobody, and the
// download works.
func TestCredential(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run rsync as another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	e := newEnv(t, func(c *rsyncd.Config) {
		c.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	})
	e.untouched()
	if err := os.Chown(e.data, uid, gid); err != nil {
		t.Fatal(err)
	}
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.dump")
	dumpDir(t, src, 1<<20)
	if r := e.rsync(ep, nil, src+"/", remote("origin.dump")); r.code != 0 {
		t.Fatalf("upload: %s", r)
	}
	if diff := cmp.Diff(tree(t, src), tree(t, filepath.Join(e.data, "origin.dump"))); diff != "" {
		t.Errorf("(-sent +received):\n%s", diff)
	}
	filepath.Walk(filepath.Join(e.data, "origin.dump"), func(path string, fi os.FileInfo, err error) error {
		if err == nil {
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
				t.Errorf("%s owned by uid %d, want nobody (%d)", path, st.Uid, uid)
			}
		}
		return nil
	})
	down := e.open(rsyncd.Download)
	dest := filepath.Join(e.work, "back")
	if r := e.rsync(down, []string{"--ignore-missing-args"}, remote("origin.dump"), remote("upgrade.log"), dest+"/"); r.code != 0 {
		t.Fatalf("download: %s", r)
	}
	if diff := cmp.Diff(tree(t, src), tree(t, filepath.Join(dest, "origin.dump"))); diff != "" {
		t.Errorf("(-server +client):\n%s", diff)
	}
}

// dialGo connects to ep with x/crypto's client and the client key,
// without serving the connection's requests and channels.
func (e *env) dialGo(ep *rsyncd.Endpoint) (gossh.Conn, <-chan gossh.NewChannel, <-chan *gossh.Request) {
	e.t.Helper()
	b, err := os.ReadFile(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(b)
	if err != nil {
		e.t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ep.Port())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	conn, chans, reqs, err := gossh.NewClientConn(c, addr, &gossh.ClientConfig{
		User: "odoo", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), // the host key is tested with OpenSSH
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return conn, chans, reqs
}

// TestDeadClient: a client that stops answering (here, one that never
// reads the server's keepalive requests) is dropped after four
// ClientAlive intervals, and the endpoint then goes idle and closes.
func TestDeadClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *rsyncd.Config) {
		c.ClientAlive = 100 * time.Millisecond
		c.IdleTimeout = 100 * time.Millisecond
	})
	ep := e.open(rsyncd.Upload)
	conn, _, _ := e.dialGo(ep)
	dropped := make(chan error, 1)
	go func() { dropped <- conn.Wait() }()
	select {
	case <-dropped:
	case <-time.After(20 * time.Second):
		t.Fatal("the silent client is still connected")
	}
	waitDone(t, ep, 10*time.Second)
}

// TestSessionLimit: a connection gets at most four session channels at a
// time.
func TestSessionLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	conn, chans, reqs := e.dialGo(ep)
	go gossh.DiscardRequests(reqs)
	go func() {
		for nc := range chans {
			nc.Reject(gossh.Prohibited, "")
		}
	}()
	for i := range 4 {
		if _, _, err := conn.OpenChannel("session", nil); err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
	}
	_, _, err := conn.OpenChannel("session", nil)
	var oce *gossh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != gossh.ResourceShortage {
		t.Errorf("fifth session: %v, want a resource shortage", err)
	}
	if _, _, err := conn.OpenChannel("direct-tcpip", nil); !errors.As(err, &oce) || oce.Reason != gossh.Prohibited {
		t.Errorf("direct-tcpip: %v, want prohibited", err)
	}
}

// TestRsyncMemoryLimit: the rsync an endpoint runs has a bounded address
// space, set before it reads the client's file list (a hostile client's
// list of names, a few bytes each, would otherwise grow it without end).
func TestRsyncMemoryLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.sql")
	writeFile(t, src, randomBytes(t, 2<<20))
	b := e.startRsync(ep, []string{"--bwlimit=256"}, src, remote("origin.sql"))
	var limits string
	waitFor(t, "the server's rsync", 30*time.Second, func() bool {
		for _, p := range processesIn(t, e.data) {
			pid, cmdline, _ := strings.Cut(p, " ")
			if strings.HasPrefix(cmdline, "sh ") {
				continue // the shell that sets the limit, before its exec
			}
			if b, err := os.ReadFile(filepath.Join("/proc", pid, "limits")); err == nil {
				limits = string(b)
				return true
			}
		}
		return false
	})
	b.cmd.Process.Kill()
	b.wait()
	var soft, hard string
	for _, line := range strings.Split(limits, "\n") {
		if f := strings.Fields(strings.TrimPrefix(line, "Max address space")); strings.HasPrefix(line, "Max address space") && len(f) >= 2 {
			soft, hard = f[0], f[1]
		}
	}
	if want := strconv.Itoa(1 << 30); soft != want || hard != want {
		t.Fatalf("rsync's address space limit is %s/%s, want %s:\n%s", soft, hard, want, limits)
	}
}
