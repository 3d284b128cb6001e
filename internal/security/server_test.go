package security_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
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

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/upgradetest"
)

// newClientWith starts a whole server with settings upgradetest does not
// expose (mod changes upgradetest's defaults) and returns the harness's
// client for it. The server stops at cleanup.
func newClientWith(t *testing.T, mod func(*app.Config)) *client {
	t.Helper()
	cfg := app.Config{
		HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: t.TempDir(),
		DatabaseURL: pgtest.NewSchema(t), Targets: []string{"15.0", "16.0", "17.0"},
		SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers:     []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"},
		ShutdownTimeout: 10 * time.Second, Workers: 1, Engine: "passthrough", EngineTimeout: time.Hour,
		AdminToken: "security-admin",
	}
	mod(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	go func() { done <- app.Serve(ctx, cfg, logger, func(a app.Addrs) { ready <- a }) }()
	srv := &upgradetest.Server{AdminToken: cfg.AdminToken, DataDir: cfg.DataDir}
	var addrs app.Addrs
	select {
	case a := <-ready:
		addrs = a
		srv.URL = "http://" + a.HTTP.String()
		host, port, _ := net.SplitHostPort(a.SFTP.String())
		srv.SFTPHost = host
		srv.SFTPPort, _ = strconv.Atoi(port)
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
	return &client{t: t, srv: srv, addrs: addrs}
}

// sshKey is a client key pair, saved for OpenSSH.
type sshKey struct {
	path   string
	signer gossh.Signer
}

// grantSFTP gives request r SFTP access for a new key.
func (c *client) grantSFTP(r record) sshKey {
	c.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	block, _ := gossh.MarshalPrivateKey(priv, "security")
	path := filepath.Join(c.t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		c.t.Fatal(err)
	}
	signer, _ := gossh.NewSignerFromKey(priv)
	p := auth(r)
	p.Set("ssh_keys", string(gossh.MarshalAuthorizedKey(signer.PublicKey())))
	if a := c.call("request_sftp_access", p); len(a.Failures) > 0 {
		c.t.Fatalf("request_sftp_access: %+v", a.Failures)
	}
	return sshKey{path: path, signer: signer}
}

func (c *client) sftpAddr() string {
	return net.JoinHostPort(c.srv.SFTPHost, strconv.Itoa(c.srv.SFTPPort))
}

// sftpClient logs in as r's SFTP user with pkg/sftp.
func (c *client) sftpClient(r record, k sshKey) *sftp.Client {
	c.t.Helper()
	conn, err := gossh.Dial("tcp", c.sftpAddr(), &gossh.ClientConfig{User: fmt.Sprintf("user_%d", r.ID),
		Auth: []gossh.AuthMethod{gossh.PublicKeys(k.signer)}, HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout: 10 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	s, err := sftp.NewClient(conn)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { s.Close(); conn.Close() })
	return s
}

// openssh runs the real OpenSSH client (sftp or ssh) as r's SFTP user
// with extra options, and returns its combined output.
func (c *client) openssh(tool string, r record, k sshKey, stdin string, extra ...string) (string, error) {
	c.t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		c.t.Fatalf("%s (OpenSSH client) is needed for this test: %v", tool, err)
	}
	port := "-P"
	if tool == "ssh" {
		port = "-p"
	}
	args := []string{"-i", k.path, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", port, strconv.Itoa(c.srv.SFTPPort)}
	args = append(args, extra...)
	if tool == "sftp" {
		args = append(args, "-b", "-")
	}
	args = append(args, fmt.Sprintf("user_%d@%s", r.ID, c.srv.SFTPHost))
	cmd := exec.Command(tool, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// status is the request's record now.
func (c *client) status(r record) record {
	c.t.Helper()
	a := c.call("status", auth(r))
	if len(a.Failures) > 0 {
		c.t.Fatalf("status: %+v", a.Failures)
	}
	return a.Request
}
