package security_test

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
)

// rawSSH opens a TCP connection to the SSH daemon from the loopback
// address from, and says whether the daemon greeted it (its version line)
// or closed it at once.
func rawSSH(t *testing.T, c *client, from string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", c.sftpAddr())
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		return conn, false
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("unexpected greeting %q", line)
	}
	return conn, true
}

// TestUnauthenticatedTrickleIsClosed: a connection that never
// authenticates is closed after the login grace time, however it keeps
// sending (here a byte a second of a version line that never ends).
func TestUnauthenticatedTrickleIsClosed(t *testing.T) {
	t.Parallel()
	const grace = 2 * time.Second
	c := newClientWith(t, func(cfg *app.Config) { cfg.SSHLoginGrace = grace })
	start := time.Now()
	conn, ok := rawSSH(t, c, "127.0.0.1")
	if !ok {
		t.Fatal("the daemon did not greet a first connection")
	}
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(grace + 10*time.Second)
	for {
		select {
		case d := <-closed:
			if d < grace-200*time.Millisecond {
				t.Fatalf("closed after %s, before the grace time", d)
			}
			return
		case <-tick.C:
			conn.Write([]byte("S")) // the attacker's trickle
		case <-deadline:
			t.Fatal("a connection trickling a byte a second was still open long after the grace time")
		}
	}
}

// TestUnauthenticatedFloodIsCapped: connections that do not authenticate
// are capped per address and in total; over the cap a new one is closed
// at once, while an authenticated OpenSSH session from elsewhere works.
func TestUnauthenticatedFloodIsCapped(t *testing.T) {
	t.Parallel()
	c := newClientWith(t, func(cfg *app.Config) {
		cfg.SSHMaxStartupsPerAddress, cfg.SSHMaxStartups = 3, 5
		cfg.SSHLoginGrace = time.Minute
	})
	var flood []net.Conn
	for i := range 3 {
		conn, ok := rawSSH(t, c, "127.0.0.2")
		if !ok {
			t.Fatalf("connection %d under the cap was refused", i+1)
		}
		flood = append(flood, conn)
	}
	if _, ok := rawSSH(t, c, "127.0.0.2"); ok {
		t.Fatal("a 4th unauthenticated connection from one address was let in")
	}
	// An authenticated session from another address goes on.
	r := c.create("db.dump")
	k := c.grantSFTP(r)
	src := filepath.Join(t.TempDir(), "db.dump")
	os.WriteFile(src, []byte("PGDMP a small dump"), 0o600)
	if out, err := c.openssh("sftp", r, k, "put "+src+" db.dump\n"); err != nil {
		t.Fatalf("sftp during the flood: %v\n%s", err, out)
	}
	// The total cap: 3 from .2 and 2 from .3 fill it; .4 is refused.
	for i := range 2 {
		conn, ok := rawSSH(t, c, "127.0.0.3")
		if !ok {
			t.Fatalf("connection %d from a second address was refused", i+1)
		}
		flood = append(flood, conn)
	}
	if _, ok := rawSSH(t, c, "127.0.0.4"); ok {
		t.Fatal("an unauthenticated connection over the total cap was let in")
	}
	// Places come back when the flood goes.
	for _, conn := range flood {
		conn.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := rawSSH(t, c, "127.0.0.2"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the caps never let a new connection in after the flood closed")
		}
		time.Sleep(20 * time.Millisecond) // the daemon frees a place when it reads the close
	}
}
