package sftpd_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/sftpd"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recorded waits for nothing: a clean close records before its answer.
func (e *env) recorded(r store.Request) store.Request {
	e.t.Helper()
	got, err := e.store.Request(context.Background(), r.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

// TestCleanCloseRecordsTheUpload: OpenSSH's put, once its handle is
// closed, is a complete upload (size and sha256 recorded) that process
// queues with no more work.
func TestCleanCloseRecordsTheUpload(t *testing.T) {
	requireTools(t, "sftp")
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	src := filepath.Join(e.work, "db.dump")
	data := randomFile(t, src, 5<<20+123)
	if out, err := e.sftpBatch(k, user(r), "put "+src+" db.dump\n"); err != nil {
		t.Fatalf("put: %v\n%s", err, out)
	}
	got := e.recorded(r)
	if got.Uploading || got.UploadSize == nil || *got.UploadSize != int64(len(data)) || *got.UploadSHA256 != sha(data) || got.UploadCompletedAt == nil {
		t.Fatalf("after put: %+v", got)
	}
	if _, err := e.store.Process(context.Background(), r.ID); err != nil {
		t.Fatalf("process: %v", err)
	}
}

// TestHashFollowsEveryWrite: rewrites below what is hashed, a resume of an
// existing prefix (put -a) and truncations all end with the sha256 of the
// bytes on disk.
func TestHashFollowsEveryWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	c := e.mustClient(k, user(r))
	check := func(what string) {
		t.Helper()
		disk := e.committed(r.ID)
		got := e.recorded(r)
		if got.UploadSHA256 == nil || *got.UploadSHA256 != sha(disk) || *got.UploadSize != int64(len(disk)) {
			t.Fatalf("%s: recorded %v, disk %d bytes sha %s", what, got.UploadSHA256, len(disk), sha(disk))
		}
	}
	block := make([]byte, 3<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	f, err := c.OpenFile("db.dump", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(block, 0)
	f.WriteAt(block, int64(len(block)))
	f.WriteAt([]byte("rewritten"), 1000) // below the hashed prefix
	f.WriteAt([]byte("hole after"), int64(3*len(block)+5))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check("rewrite and hole")

	f, err = c.OpenFile("db.dump", os.O_WRONLY) // put -a: keep the prefix, append
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c.Stat("db.dump")
	f.WriteAt(block, st.Size())
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check("resume")

	f, err = c.OpenFile("db.dump", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("tail"), 4<<20)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check("truncate")
}

// TestDroppedConnectionLeavesTheUploadIncomplete: a connection that drops
// with the handle open leaves no complete upload, and the file cut to its
// contiguous prefix.
func TestDroppedConnectionLeavesTheUploadIncomplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := e.clientOver(conn, k, user(r))
	f, err := c.OpenFile("db.dump", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.Close() // the network drops
	waitFor(t, "the server to see the drop", func() bool { return !e.recorded(r).Uploading })
	got := e.recorded(r)
	if got.UploadCompletedAt != nil || got.UploadSize != nil {
		t.Fatalf("a dropped upload counts as complete: %+v", got)
	}
	if _, err := e.store.Process(context.Background(), r.ID); !errors.Is(err, store.ErrNoUpload) {
		t.Fatalf("process after a drop: %v", err)
	}
	if st, _ := os.Stat(e.stagedFile(r.ID)); st.Size() != 1<<20 {
		t.Fatalf("the file holds %d bytes", st.Size())
	}
}

// blackhole forwards TCP to the daemon until frozen; then it forwards
// nothing more and keeps the daemon's side open, as a network that drops
// every packet does: the daemon never learns the client is gone.
type blackhole struct {
	ln       net.Listener
	frozen   atomic.Bool
	mu       sync.Mutex
	upstream []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.upstream {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.upstream = append(b.upstream, up)
			b.mu.Unlock()
			go b.pipe(up, c)
			go b.pipe(c, up)
		}
	}()
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if b.frozen.Load() {
			return // drop everything, close nothing
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !b.frozen.Load() {
				dst.Close()
			}
			return
		}
	}
}

func (b *blackhole) port() string {
	_, p, _ := net.SplitHostPort(b.ln.Addr().String())
	return p
}

// upstreamClosed checks that the daemon closed every upstream connection.
func (b *blackhole) upstreamClosed(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	ups := append([]net.Conn(nil), b.upstream...)
	b.mu.Unlock()
	for _, up := range ups {
		up.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, up); err != nil {
			t.Fatalf("the stale connection was not closed by the daemon: %v", err)
		}
	}
}

// TestResumeAtOnceAfterANetworkDrop: OpenSSH's put, cut off by a network
// that drops everything (the daemon sees nothing) and killed with SIGKILL,
// then put -a at once: the new session takes the upload over, the stale
// connection is closed and the file is byte-identical.
func TestResumeAtOnceAfterANetworkDrop(t *testing.T) {
	requireTools(t, "sftp", "cmp")
	t.Parallel()
	e := newEnv(t, func(c *sftpd.Config) { c.UploadLease = time.Minute }) // a lease far longer than the test may wait
	k := e.newKey("id_ed25519")
	r := e.request("db.dump", k)
	src := filepath.Join(e.work, "db.dump")
	const size = 128 << 20
	randomFile(t, src, size)
	shared := e.stagedFile(r.ID)
	hole := newBlackhole(t, e.addr)

	args := append(sshOpts(k), "-b", "-", "-P", hole.port(), user(r)+"@127.0.0.1")
	cmd := exec.Command("sftp", append([]string{"-l", "200000"}, args...)...) // 200 Mbit/s: slow enough to cut mid-way
	cmd.Stdin = strings.NewReader("put " + src + " db.dump\n")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upload to pass 16 MiB", func() bool {
		st, err := os.Stat(shared)
		return err == nil && st.Size() > 16<<20
	})
	hole.frozen.Store(true)
	cmd.Process.Kill()
	cmd.Wait()
	if !e.recorded(r).Uploading {
		t.Fatal("the daemon saw the drop; this test needs it not to")
	}
	start := time.Now()
	out, err := e.sftpBatch(k, user(r), "put -a "+src+" db.dump\n")
	if err != nil {
		t.Fatalf("put -a right after the drop: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("put -a took %s: it waited for something", d)
	}
	if out, err := exec.Command("cmp", src, e.committedPath(r.ID)).CombinedOutput(); err != nil {
		t.Fatalf("the resumed upload differs: %s", out)
	}
	got := e.recorded(r)
	if got.Uploading || got.UploadSize == nil || *got.UploadSize != size {
		t.Fatalf("after put -a: %+v", got)
	}
	hole.upstreamClosed(t)
}

// clientOver opens a pkg/sftp client as u over conn.
func (e *env) clientOver(conn net.Conn, k key, u string) *sftp.Client {
	e.t.Helper()
	sc, chans, reqs, err := gossh.NewClientConn(conn, e.addr, &gossh.ClientConfig{User: u,
		Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)}, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err != nil {
		e.t.Fatal(err)
	}
	client := gossh.NewClient(sc, chans, reqs)
	c, err := sftp.NewClient(client)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(); client.Close() })
	return c
}
