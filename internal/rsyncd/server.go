package rsyncd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/sshauth"
)

// Direction says which way an endpoint's files go.
type Direction int

const (
	// Upload endpoints receive files from the client: they run rsync's
	// receiver only.
	Upload Direction = iota + 1
	// Download endpoints send files to the client: they run rsync --sender
	// only.
	Download
)

func (d Direction) String() string {
	switch d {
	case Upload:
		return "upload"
	case Download:
		return "download"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

var (
	// ErrNoPort is returned by Open when every port of Config.Ports is taken.
	ErrNoPort = errors.New("rsyncd: no free port in the rsync port range")
	// ErrServerClosed is returned by Open after Server.Close.
	ErrServerClosed = errors.New("rsyncd: server closed")
)

// PortRange is an inclusive range of TCP ports. The zero value means any
// free port the system picks.
type PortRange struct{ First, Last int }

// IsZero reports whether r is the zero value (any free port).
func (r PortRange) IsZero() bool { return r == PortRange{} }

func (r PortRange) String() string {
	if r.IsZero() {
		return "any"
	}
	if r.First == r.Last {
		return strconv.Itoa(r.First)
	}
	return strconv.Itoa(r.First) + "-" + strconv.Itoa(r.Last)
}

// ParsePorts reads UPGRADE_RSYNC_PORTS: "30000-30099", a single port
// "30000", or "" for the zero value. It fails on anything else, on ports
// outside 1-65535 and on a range that ends before it starts.
func ParsePorts(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return PortRange{}, nil
	}
	first, last, isRange := strings.Cut(s, "-")
	if !isRange {
		last = first
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(first))
	b, err2 := strconv.Atoi(strings.TrimSpace(last))
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return PortRange{}, fmt.Errorf("rsyncd: port range %q: want FIRST-LAST with 1 <= FIRST <= LAST <= 65535", s)
	}
	return PortRange{First: a, Last: b}, nil
}

// Config configures a Server. Zero values get the defaults.
type Config struct {
	// HostSigners are the server's persistent host keys (the SFTP daemon's:
	// sftpd.LoadHostKeys). Required.
	HostSigners []gossh.Signer
	// ListenHost is the address endpoints bind ("" = all).
	ListenHost string
	// Ports is the range endpoints take their port from (zero: any free
	// port).
	Ports PortRange
	// IdleTimeout closes an endpoint that has had no connection for this
	// long (default 10 minutes).
	IdleTimeout time.Duration
	// LoginGrace closes connections that have not authenticated after this
	// long (default 30 s).
	LoginGrace time.Duration
	// StopGrace is how long Close lets a running rsync finish before it
	// kills it (default 10 s).
	StopGrace time.Duration
	// ClientAlive is how often the server checks that a connected client
	// answers (OpenSSH's ClientAliveInterval); a connection silent for four
	// intervals is dropped (default 15 s).
	ClientAlive time.Duration
	// Credential is the OS user rsync runs as (nil: this process's user).
	// Setting another user than this process's needs root.
	Credential *syscall.Credential
	// RsyncPath is the rsync binary (default: "rsync" from PATH).
	RsyncPath string
	// Ciphers overrides the offered ciphers (nil: DefaultCiphers()).
	Ciphers []string
}

// DefaultCiphers are the ciphers endpoints offer, AES-GCM only, as the SFTP
// daemon's: an SSH client takes the first of its own list that the server
// offers, OpenSSH lists chacha20-poly1305 first, and Go's chacha20 (no
// assembly on amd64) or AES-CTR (a separate MAC) cost much throughput (see
// docs/benchmarks.md). AES-GCM is in every OpenSSH since 6.2 (2013).
func DefaultCiphers() []string { return []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"} }

// Server opens per-transfer rsync endpoints. Its methods are safe for
// concurrent use.
type Server struct {
	logger *slog.Logger
	cfg    Config
	rsync  string // the rsync binary's path
	// limiter serves every endpoint: a client cannot reset its count of
	// failed logins by trying another port.
	limiter *sshauth.Limiter

	mu        sync.Mutex
	closed    bool
	endpoints map[*Endpoint]struct{}
	ports     map[int]bool // ports of open endpoints
	next      int          // where the next port search starts, from Ports.First
}

// requiredOptions are the rsync options endpoints force that older rsyncs
// lack: --confine-root keeps filter merge files that clients name over the
// protocol (not in the command line) inside the transfer folder, --drop-D
// keeps uploads from creating devices and special files without changing
// the file list's encoding (--no-D on one side breaks the transfer).
var requiredOptions = []string{"--confine-root", "--drop-D"}

// New checks the configuration and the rsync binary (it must run and know
// the options endpoints force: rsync 3.5 or later) and returns a Server.
// It does not listen: Open does, per transfer.
func New(logger *slog.Logger, cfg Config) (*Server, error) {
	if len(cfg.HostSigners) == 0 {
		return nil, errors.New("rsyncd: no host key")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.LoginGrace <= 0 {
		cfg.LoginGrace = 30 * time.Second
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.ClientAlive <= 0 {
		cfg.ClientAlive = 15 * time.Second
	}
	if cfg.Ciphers == nil {
		cfg.Ciphers = DefaultCiphers()
	}
	for _, c := range cfg.Ciphers {
		if !slices.Contains(gossh.SupportedAlgorithms().Ciphers, c) {
			return nil, fmt.Errorf("rsyncd: unsupported cipher %q", c)
		}
	}
	if !cfg.Ports.IsZero() {
		if _, err := ParsePorts(cfg.Ports.String()); err != nil {
			return nil, err
		}
	}
	if c := cfg.Credential; c != nil && os.Geteuid() != 0 && int(c.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("rsyncd: running rsync as uid %d needs root", c.Uid)
	}
	name := cfg.RsyncPath
	if name == "" {
		name = "rsync"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("rsyncd: rsync not found (%s): the rsync transfers of Odoo's upgrade client run the machine's rsync; install it (apt-get install rsync): %w", name, err)
	}
	version, err := probeRsync(path)
	if err != nil {
		return nil, err
	}
	s := &Server{
		logger:    logger.With("component", "rsyncd"),
		cfg:       cfg,
		rsync:     path,
		limiter:   sshauth.NewLimiter(),
		endpoints: map[*Endpoint]struct{}{},
		ports:     map[int]bool{},
	}
	s.logger.Debug("rsync found", "path", path, "version", version)
	return s, nil
}

// probeRsync runs rsync --version and --help and checks that it knows
// the options endpoints force. It returns the version line.
func probeRsync(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // bounded start-up probe
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("rsyncd: %s --version: %w", path, err)
	}
	version, _, _ := strings.Cut(string(out), "\n")
	help, err := exec.CommandContext(ctx, path, "--help").Output()
	if err != nil {
		return "", fmt.Errorf("rsyncd: %s --help: %w", path, err)
	}
	for _, o := range requiredOptions {
		if !bytes.Contains(help, []byte(o)) {
			return "", fmt.Errorf("rsyncd: %s (%s) lacks %s: rsync 3.5 or later is needed to confine transfers (Debian bookworm-security has it: apt-get install rsync)", path, strings.TrimSpace(version), o)
		}
	}
	return strings.TrimSpace(version), nil
}

// Transfer is what an endpoint serves.
type Transfer struct {
	RequestID int64
	Direction Direction
	// Key is the only key that may log in (as user odoo).
	Key gossh.PublicKey
	// Dir is the request's /data: /data/<rel> is Dir/<rel>. It must exist
	// and, when Config.Credential is set, be reachable and (for an upload)
	// writable by that user. rsync's messages to the client show its
	// path: it must hold no secret.
	Dir string
}

// Open starts an endpoint for t on a port of Config.Ports. It returns
// ErrNoPort when every port of the range is taken, ErrServerClosed after
// Close, or an error for an invalid Transfer.
func (s *Server) Open(t Transfer) (*Endpoint, error) {
	if t.Direction != Upload && t.Direction != Download {
		return nil, fmt.Errorf("rsyncd: invalid direction %v", t.Direction)
	}
	if t.Key == nil {
		return nil, errors.New("rsyncd: no client key")
	}
	if !filepath.IsAbs(t.Dir) {
		return nil, fmt.Errorf("rsyncd: transfer folder %q is not absolute", t.Dir)
	}
	dir, err := filepath.EvalSymlinks(t.Dir)
	if err != nil {
		return nil, fmt.Errorf("rsyncd: transfer folder: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("rsyncd: transfer folder %s is not a directory", t.Dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	ln, err := s.listen()
	if err != nil {
		return nil, err
	}
	e := newEndpoint(s, t, dir, ln)
	s.endpoints[e] = struct{}{}
	s.ports[e.port] = true
	e.start()
	return e, nil
}

// listen binds a port of the range, starting after the last one given out
// so that a closed endpoint's port is not handed out again at once.
// s.mu is held.
func (s *Server) listen() (net.Listener, error) {
	if s.cfg.Ports.IsZero() {
		ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, "0"))
		if err != nil {
			return nil, fmt.Errorf("rsyncd: listen: %w", err)
		}
		return ln, nil
	}
	first, n := s.cfg.Ports.First, s.cfg.Ports.Last-s.cfg.Ports.First+1
	for i := range n {
		off := (s.next + i) % n
		port := first + off
		if s.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, strconv.Itoa(port)))
		if err != nil {
			continue // taken by another process
		}
		s.next = (off + 1) % n
		return ln, nil
	}
	return nil, ErrNoPort
}

// release forgets a closed endpoint.
func (s *Server) release(e *Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.endpoints, e)
	delete(s.ports, e.port)
}

// Close closes every endpoint (as Endpoint.Close does, in parallel) and
// makes Open fail with ErrServerClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	eps := make([]*Endpoint, 0, len(s.endpoints))
	for e := range s.endpoints {
		eps = append(eps, e)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range eps {
		wg.Go(func() { e.Close() })
	}
	wg.Wait()
	return nil
}
