package sftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/sshauth"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = ssh.ErrServerClosed

// RequestStore is what the daemon needs from the store; *store.Store
// satisfies it.
type RequestStore interface {
	Request(ctx context.Context, id int64) (store.Request, error)
	SFTPKeys(ctx context.Context, id int64) ([]store.SFTPKey, error)
	TakeUpload(ctx context.Context, id int64, token string, lease time.Duration, inPlace bool) (string, error)
	RenewUpload(ctx context.Context, id int64, token string, lease time.Duration) error
	CompleteUpload(ctx context.Context, id int64, token string, u store.Upload) (store.Request, string, error)
	AbortUpload(ctx context.Context, id int64, token string) error
	AddEvent(ctx context.Context, id int64, level, message string) error
}

// FileStore is what the daemon needs of the request files; *files.Store
// satisfies it. An upload is written in this host's staging folder (SFTP
// writes at random offsets) and moved into the store once cleanly closed.
type FileStore interface {
	Open(ctx context.Context, id int64, name files.Name) (files.Object, error)
	Stat(ctx context.Context, id int64, name files.Name) (files.Info, error)
	StagePath(id int64, name files.Name) (string, error)
	LockStaging(ctx context.Context, id int64) (*files.Lock, error)
	CommitFile(ctx context.Context, id int64, name files.Name, path string, sum *files.Received) (files.Received, error)
	Remove(ctx context.Context, id int64, names ...files.Name) error
}

// Config configures the daemon. Zero values get the defaults.
type Config struct {
	HostSigners []gossh.Signer // from LoadHostKeys
	Files       FileStore
	// IdleTimeout closes connections without traffic (default 10 minutes).
	IdleTimeout time.Duration
	// UploadLease is how long a write handle's lease lasts between renewals
	// (default 1 minute). A writer that takes an upload over waits up to
	// half of it for the writer it replaced to stop.
	UploadLease time.Duration
	// MaxUploadBytes bounds the shared file: a write ending past it, or a
	// truncation beyond it, is refused (0: no limit).
	MaxUploadBytes int64
	// UploadFsync syncs an upload to disk before recording it as complete.
	UploadFsync bool
	// MaxTxPacket is the largest data packet sent to clients (default and
	// minimum 32 KiB, the size every client accepts).
	MaxTxPacket uint32
	// NoAllocator turns off pkg/sftp's packet buffer allocator (on by
	// default: it reuses the 32 KiB data buffers instead of allocating one
	// per packet).
	NoAllocator bool
	// Faults may disconnect or throttle sessions (nil: none).
	Faults *fault.Injector
	// Metrics counts bytes moved (nil: none).
	Metrics *metrics.Metrics
	// Ciphers overrides the offered ciphers (nil: DefaultCiphers()).
	Ciphers []string
	// LoginGrace closes a connection that has not authenticated this long
	// after it was accepted, whatever it sends (sshd's LoginGraceTime;
	// default 30 seconds).
	LoginGrace time.Duration
	// MaxStartups and MaxStartupsPerAddress cap the connections not yet
	// authenticated, in total and from one address (sshd's MaxStartups;
	// defaults 100 and 10): a connection over either cap is closed at once.
	MaxStartups, MaxStartupsPerAddress int
	NowFunc                            func() time.Time
}

// DefaultCiphers are the ciphers the daemon offers. SSH clients pick the
// first of their own list that the server offers. OpenSSH lists
// chacha20-poly1305 first, then AES-CTR, then AES-GCM; Go implements
// chacha20 without assembly on amd64 and AES-CTR needs a separate MAC, so
// offering either costs a third to a half of the throughput (see
// docs/benchmarks.md). AES-GCM is in every OpenSSH since 6.2 (2013) and in
// PuTTY/WinSCP since 2021; older clients need UPGRADE_SFTP_CIPHERS.
func DefaultCiphers() []string { return []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"} }

// SupportedCiphers are the names Ciphers may hold.
func SupportedCiphers() []string { return gossh.SupportedAlgorithms().Ciphers }

// Server is the SSH/SFTP daemon.
type Server struct {
	logger   *slog.Logger
	requests RequestStore
	cfg      Config
	srv      *ssh.Server
	limiter  *sshauth.Limiter
	gate     *startupGate

	mu        sync.Mutex
	writers   map[string]*writeHandle // open write handles of this process, by lease token
	listeners []net.Listener
	closed    bool
}

type ctxKey int

const (
	requestIDKey ctxKey = iota
	preauthKey          // the connection's *preauthConn
)

// New returns a daemon; Serve runs it.
func New(logger *slog.Logger, requests RequestStore, cfg Config) (*Server, error) {
	if len(cfg.HostSigners) == 0 {
		return nil, errors.New("sftpd: no host key")
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.UploadLease == 0 {
		cfg.UploadLease = time.Minute
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.Ciphers == nil {
		cfg.Ciphers = DefaultCiphers()
	}
	if cfg.LoginGrace == 0 {
		cfg.LoginGrace = 30 * time.Second
	}
	if cfg.MaxStartups == 0 {
		cfg.MaxStartups = 100
	}
	if cfg.MaxStartupsPerAddress == 0 {
		cfg.MaxStartupsPerAddress = 10
	}
	s := &Server{logger: logger.With("component", "sftpd"), requests: requests, cfg: cfg, limiter: sshauth.NewLimiter(),
		writers: map[string]*writeHandle{}}
	s.gate = &startupGate{max: cfg.MaxStartups, maxPerHost: cfg.MaxStartupsPerAddress, perHost: map[string]int{},
		logger: s.logger}
	s.srv = &ssh.Server{
		IdleTimeout:      cfg.IdleTimeout,
		PublicKeyHandler: s.authenticate,
		// Only the sftp subsystem, by our own session handler: no shell,
		// exec, pty, X11 or agent forwarding; no port forwarding (no handler
		// for direct-tcpip or tcpip-forward).
		ChannelHandlers: map[string]ssh.ChannelHandler{"session": s.handleSession},
		RequestHandlers: map[string]ssh.RequestHandler{},
		ConnCallback:    s.admit,
		ServerConfigCallback: func(ctx ssh.Context) *gossh.ServerConfig {
			c := &gossh.ServerConfig{MaxAuthTries: 10, ServerVersion: "SSH-2.0-upgrade-server"}
			c.Ciphers = cfg.Ciphers
			// Called once the client proved it holds an accepted key: the
			// connection leaves the unauthenticated ones.
			c.VerifiedPublicKeyCallback = func(_ gossh.ConnMetadata, _ gossh.PublicKey, p *gossh.Permissions, _ string) (*gossh.Permissions, error) {
				if pc, ok := ctx.Value(preauthKey).(*preauthConn); ok {
					pc.authenticated()
				}
				return p, nil
			}
			return c
		},
		ConnectionFailedCallback: func(conn net.Conn, err error) {
			s.logger.Debug("ssh handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
		},
	}
	for _, k := range cfg.HostSigners {
		s.srv.AddHostKey(k)
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close; it then returns
// ErrServerClosed. A Shutdown or Close that comes first (even before Serve has begun to
// accept, which gliderlabs/ssh alone would miss and then serve forever)
// makes it return at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.srv.Serve(ln)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed // whichever close came first
	}
	return err
}

// stopServing marks the server closed and closes the listeners Serve got.
func (s *Server) stopServing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, ln := range s.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting connections and waits for open sessions until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopServing()
	return s.srv.Shutdown(ctx)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.stopServing()
	return s.srv.Close()
}

// admit lets a new connection in while the unauthenticated ones are under
// their caps, and closes it when it has not authenticated within the
// login grace time.
func (s *Server) admit(ctx ssh.Context, conn net.Conn) net.Conn {
	host := sshauth.RemoteHost(conn.RemoteAddr())
	if !s.gate.enter(host) {
		return nil // gliderlabs closes it
	}
	pc := &preauthConn{Conn: conn, host: host, gate: s.gate}
	pc.timer = time.AfterFunc(s.cfg.LoginGrace, func() {
		if pc.leave() {
			s.logger.Info("ssh connection closed: not authenticated within the login grace time", "remote", host,
				"grace", s.cfg.LoginGrace)
			conn.Close()
		}
	})
	ctx.SetValue(preauthKey, pc)
	return pc
}

// startupGate counts the connections not yet authenticated, in total and
// by address.
type startupGate struct {
	mu         sync.Mutex
	max        int
	maxPerHost int
	total      int
	perHost    map[string]int
	logger     *slog.Logger
	refused    int       // since the last log line
	loggedAt   time.Time // one line every ten seconds at most: a flood must not flood the log
}

func (g *startupGate) enter(host string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.max || g.perHost[host] >= g.maxPerHost {
		g.refused++
		if time.Since(g.loggedAt) >= 10*time.Second {
			g.logger.Warn("ssh connections refused: too many unauthenticated connections", "remote", host,
				"refused", g.refused, "unauthenticated", g.total, "from_address", g.perHost[host])
			g.refused, g.loggedAt = 0, time.Now()
		}
		return false
	}
	g.total++
	g.perHost[host]++
	return true
}

func (g *startupGate) exit(host string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perHost[host]--; g.perHost[host] <= 0 {
		delete(g.perHost, host)
	}
}

// preauthConn is a connection while it has not authenticated: it holds a
// place in the gate until it authenticates, closes or runs out of grace.
type preauthConn struct {
	net.Conn
	host  string
	gate  *startupGate
	timer *time.Timer
	once  sync.Once
}

// leave gives the connection's place back; it reports whether this call
// did (the first of authenticated, Close and the grace timer).
func (c *preauthConn) leave() bool {
	left := false
	c.once.Do(func() {
		left = true
		c.gate.exit(c.host)
	})
	return left
}

func (c *preauthConn) authenticated() {
	c.timer.Stop()
	c.leave()
}

func (c *preauthConn) Close() error {
	c.timer.Stop()
	c.leave()
	return c.Conn.Close()
}

// StopUpload stops this process's write handle of request id that holds
// token, because a newer writer took the upload over (store.TakeUpload,
// announced on store.UploadChannel): nothing it writes afterwards lands,
// the file is cut back to its contiguous prefix, the upload's lock is
// released and the handle's SSH connection is closed. It reports whether
// such a handle was open here.
func (s *Server) StopUpload(id int64, token string) bool {
	s.mu.Lock()
	w := s.writers[token]
	s.mu.Unlock()
	if w == nil || w.h.id != id {
		return false
	}
	w.revoke()
	return true
}

func (s *Server) register(w *writeHandle) {
	s.mu.Lock()
	s.writers[w.token] = w
	s.mu.Unlock()
}

func (s *Server) unregister(w *writeHandle) {
	s.mu.Lock()
	if s.writers[w.token] == w {
		delete(s.writers, w.token)
	}
	s.mu.Unlock()
}

// liveSize is the contiguous size of request id's upload while a write
// handle of this process has it open.
func (s *Server) liveSize(id int64) (int64, bool) {
	s.mu.Lock()
	var live *writeHandle
	for _, w := range s.writers {
		if w.h.id == id {
			live = w
		}
	}
	s.mu.Unlock()
	if live == nil {
		return 0, false
	}
	return live.contiguous(), true
}

// parseUser reads the request id of "user_<id>".
func parseUser(user string) (int64, bool) {
	rest, ok := strings.CutPrefix(user, "user_")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil && id > 0 && strconv.FormatInt(id, 10) == rest
}

// loginStates are the states in which a grant lets its keys in.
var loginStates = []store.State{store.StateDraft, store.StateQueued, store.StateProcessing,
	store.StateTesting, store.StateDone, store.StateDelivered}

// authenticate lets a key in as user_<id> when request_sftp_access stored
// it for that request, the grant has not expired and the state allows SFTP.
// Failures from one address are slowed down.
func (s *Server) authenticate(ctx ssh.Context, key ssh.PublicKey) bool {
	host := sshauth.RemoteHost(ctx.RemoteAddr())
	s.limiter.Wait(ctx.Done(), host)
	id, ok := parseUser(ctx.User())
	if ok {
		ok = s.allowed(ctx, id, key)
	}
	if !ok {
		s.limiter.Fail(host)
		s.logger.Info("ssh authentication refused", "remote", host, "user", truncate(ctx.User(), 64))
		return false
	}
	s.limiter.Succeed(host)
	ctx.SetValue(requestIDKey, id)
	return true
}

func (s *Server) allowed(ctx context.Context, id int64, key ssh.PublicKey) bool {
	r, err := s.requests.Request(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.logger.Error("ssh authentication: read request", "request_id", id, "err", err)
		}
		return false
	}
	if r.SFTPExpiresAt == nil || !s.cfg.NowFunc().Before(*r.SFTPExpiresAt) || !slices.Contains(loginStates, r.State) {
		return false
	}
	keys, err := s.requests.SFTPKeys(ctx, id)
	if err != nil {
		s.logger.Error("ssh authentication: read keys", "request_id", id, "err", err)
		return false
	}
	for _, k := range keys {
		pk, _, _, _, err := gossh.ParseAuthorizedKey([]byte(k.PublicKey))
		if err == nil && ssh.KeysEqual(pk, key) {
			return true
		}
	}
	return false
}

// handleSession serves one session channel: the sftp subsystem and nothing
// else. A clean end sends exit-status 0 (scp, which speaks SFTP since
// OpenSSH 9, reports success from it).
func (s *Server) handleSession(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx ssh.Context) {
	id, ok := ctx.Value(requestIDKey).(int64)
	if !ok {
		newChan.Reject(gossh.Prohibited, "not authenticated")
		return
	}
	ch, reqs, err := newChan.Accept()
	if err != nil {
		return
	}
	logger := s.logger.With("request_id", id, "remote", sshauth.RemoteHost(ctx.RemoteAddr()))
	var wg sync.WaitGroup
	started := false
	for req := range reqs {
		if req.Type == "subsystem" && !started && subsystemName(req.Payload) == "sftp" {
			started = true
			req.Reply(true, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rwc := s.faulty(conn, ch, id, logger)
				tell := func(msg string) { tellUser(ch, msg) }
				status := s.serveSFTP(ctx, rwc, id, logger, tell, func() { conn.Close() })
				ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{status}))
				ch.Close()
			}()
			continue
		}
		if req.Type != "env" {
			logger.Info("ssh request refused", "type", truncate(req.Type, 64))
		}
		if req.WantReply {
			req.Reply(false, nil)
		}
		switch req.Type {
		case "shell", "exec", "subsystem":
			// The session cannot do anything else: end it, as OpenSSH
			// clients wait for the server to close after a refusal.
			if !started {
				ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{1}))
				ch.Close()
			}
		}
	}
	if !started {
		ch.Close()
	}
	wg.Wait()
}

// tellUser writes a line to the session's stderr, which OpenSSH's sftp
// shows on the user's terminal (it prints a failed request's status code,
// not the server's message). It waits at most two seconds: a client that
// stopped reading cannot hold the caller.
func tellUser(ch gossh.Channel, msg string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fmt.Fprintf(ch.Stderr(), "upgrade-server: %s\n", msg)
	}()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func subsystemName(payload []byte) string {
	var p struct{ Name string }
	if gossh.Unmarshal(payload, &p) != nil {
		return ""
	}
	return p.Name
}

// serveSFTP runs pkg/sftp's request server with this request's view; a
// panic is recovered and logged. It returns the exit status.
func (s *Server) serveSFTP(ctx context.Context, ch io.ReadWriteCloser, id int64, logger *slog.Logger, tell func(string), hangUp func()) (status uint32) {
	defer func() {
		if v := recover(); v != nil {
			logger.Error("sftp session panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			status = 1
		}
	}()
	h := &fsHandler{ctx: ctx, logger: logger, requests: s.requests, srv: s, files: s.cfg.Files, lease: s.cfg.UploadLease, id: id,
		metrics: s.cfg.Metrics, tellFunc: tell, hangUpFunc: hangUp}
	opts := []sftp.RequestServerOption{sftp.WithStartDirectory("/")}
	if !s.cfg.NoAllocator {
		opts = append(opts, sftp.WithRSAllocator())
	}
	if s.cfg.MaxTxPacket > 0 {
		opts = append(opts, sftp.WithRSMaxTxPacket(s.cfg.MaxTxPacket))
	}
	rs := sftp.NewRequestServer(ch, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h}, opts...)
	err := rs.Serve() // the caller closes the channel after sending exit-status
	if err != nil && !errors.Is(err, io.EOF) {
		logger.Info("sftp session ended", "err", err)
		return 1
	}
	logger.Debug("sftp session ended")
	return 0
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// faulty applies injected SFTP faults to a session: a disconnect after
// some bytes, a throttled rate.
func (s *Server) faulty(conn *gossh.ServerConn, ch gossh.Channel, id int64, logger *slog.Logger) io.ReadWriteCloser {
	drop := s.cfg.Faults.Draw("sftp", id, fault.SFTPDisconnect)
	slow := s.cfg.Faults.Draw("sftp", id, fault.SFTPThrottle)
	if drop == nil && slow == nil {
		return ch
	}
	f := &faultyChannel{Channel: ch, conn: conn, start: time.Now(), limit: -1}
	if drop != nil {
		f.limit = drop.AfterBytes
		logger.Info("fault: this session drops after some bytes", "after_bytes", drop.AfterBytes)
	}
	if slow != nil {
		f.rate = slow.RateBytesPerSec
		logger.Info("fault: this session is throttled", "bytes_per_sec", slow.RateBytesPerSec)
	}
	return f
}

type faultyChannel struct {
	gossh.Channel
	conn  *gossh.ServerConn
	mu    sync.Mutex
	n     int64
	limit int64 // -1: no disconnect
	rate  int64 // 0: no throttle
	start time.Time
}

func (f *faultyChannel) account(k int) error {
	f.mu.Lock()
	f.n += int64(k)
	n := f.n
	f.mu.Unlock()
	if f.limit >= 0 && n >= f.limit {
		f.conn.Close() // as if the network dropped
		return io.ErrUnexpectedEOF
	}
	if f.rate > 0 {
		want := time.Duration(float64(n) / float64(f.rate) * float64(time.Second))
		if d := want - time.Since(f.start); d > 0 {
			time.Sleep(d)
		}
	}
	return nil
}

func (f *faultyChannel) Read(p []byte) (int, error) {
	n, err := f.Channel.Read(p)
	if aerr := f.account(n); aerr != nil {
		return n, aerr
	}
	return n, err
}

func (f *faultyChannel) Write(p []byte) (int, error) {
	n, err := f.Channel.Write(p)
	if aerr := f.account(n); aerr != nil {
		return n, aerr
	}
	return n, err
}
