// Package upgradetest starts a complete upgrade-server in-process for
// client tests, in the spirit of net/http/httptest: HTTP API, SFTP daemon
// and workers on free loopback ports, a temporary data directory and a
// database of its own, stopped cleanly when the test ends.
//
//	func TestMyClient(t *testing.T) {
//		srv := upgradetest.NewServer(t)
//		client := myclient.New(srv.URL)          // http://127.0.0.1:PORT
//		// … create, upload, process, status; contracts like
//		// "scenario:fail=Nope" choose outcomes (see the README).
//	}
//
// The database is UPGRADE_TEST_DATABASE_URL when set (a schema per
// server), otherwise a private PostgreSQL cluster started from the
// machine's server binaries; without either the test is skipped with a
// message saying what to install.
package upgradetest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// Server is a running upgrade-server.
type Server struct {
	// URL is the base of the API: URL + "/database/v1/create".
	URL string
	// SFTPHost and SFTPPort reach the SFTP daemon (also what
	// request_sftp_access advertises).
	SFTPHost string
	SFTPPort int
	// AdminToken authorizes the admin API (/admin/v1).
	AdminToken string
	// DataDir is the server's data directory.
	DataDir string

	cancel context.CancelFunc
	done   chan error
}

// Options change the defaults of NewServer.
type Options struct {
	// Engine is "passthrough" (default: fast, no PostgreSQL work),
	// "builtin" or "command".
	Engine string
	// MockDuration is how long passthrough and scenario runs take (default 0: instant).
	MockDuration time.Duration
	// Targets are the valid target versions (default 7.0 … 19.0).
	Targets []string
	// ContractValidFunc restricts contracts (default: any non-empty one).
	ContractValidFunc func(string) bool
	// Logger receives the server's logs (default: discarded).
	Logger *slog.Logger
	// Workers per server (default 2).
	Workers int
	// MaxRestoreBytes caps what a restore may write (default 0: no cap).
	MaxRestoreBytes int64
	// EngineCommand is the command engine's command.
	EngineCommand string
}

// NewServer starts a server for the test and stops it at cleanup.
func NewServer(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Engine == "" {
		o.Engine = "passthrough"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if len(o.Targets) == 0 {
		o.Targets = []string{"7.0", "8.0", "9.0", "10.0", "11.0", "12.0", "13.0", "14.0", "15.0", "16.0", "17.0", "18.0", "19.0"}
	}
	s := &Server{AdminToken: "upgradetest-admin", DataDir: t.TempDir(), done: make(chan error, 1)}
	cfg := app.Config{
		HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: s.DataDir,
		DatabaseURL: pgtest.NewSchema(t), Targets: o.Targets, ContractValidFunc: o.ContractValidFunc,
		SFTPPublicPort: 0, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers:     []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"},
		ShutdownTimeout: 10 * time.Second, Workers: o.Workers, Engine: o.Engine, EngineTimeout: time.Hour,
		MockDuration: o.MockDuration, AdminToken: s.AdminToken, UploadFsync: false,
		MaxRestoreBytes: o.MaxRestoreBytes, EngineCommand: o.EngineCommand,
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan app.Addrs, 1)
	go func() { s.done <- app.Serve(ctx, cfg, o.Logger, func(a app.Addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		s.URL = "http://" + a.HTTP.String()
		host, port, _ := net.SplitHostPort(a.SFTP.String())
		s.SFTPHost = host
		s.SFTPPort, _ = strconv.Atoi(port)
	case err := <-s.done:
		cancel()
		t.Fatalf("upgradetest: the server did not start: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("upgradetest: the server did not start within 2 minutes")
	}
	t.Cleanup(s.Close)
	waitReady(t, s.URL+"/readyz")
	return s
}

// Close stops the server and waits for it.
func (s *Server) Close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	<-s.done
}

func waitReady(t testing.TB, u string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("upgradetest: %s never answered 200: %v", u, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Exit runs a package's tests and then stops the private PostgreSQL
// cluster if this test binary started one. Call it from TestMain:
//
//	func TestMain(m *testing.M) { upgradetest.Exit(m) }
//
// Without it the cluster keeps running after the tests (and is reused by
// the next run).
func Exit(m *testing.M) { pgtest.Exit(m) }
