package rsyncd

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/upgrade-server/upgrade-server/internal/sshauth"
)

// sshUser is the only login name, the client's default.
const sshUser = "odoo"

// maxConns bounds an endpoint's open connections, maxChannels a
// connection's open session channels: a client needs one of each.
const (
	maxConns    = 16
	maxChannels = 4
)

// killWait bounds how long a killed rsync's session may take to tell its
// client before the server closes the connection.
const killWait = 2 * time.Second

// Endpoint is one transfer's SSH endpoint. Its methods are safe for
// concurrent use.
type Endpoint struct {
	s       *Server
	t       Transfer
	dir     string // t.Dir with its symbolic links resolved
	ln      net.Listener
	port    int
	logger  *slog.Logger
	sshCfg  *gossh.ServerConfig
	closing chan struct{} // closed when Close starts
	done    chan struct{} // closed when Close has finished
	once    sync.Once
	wg      sync.WaitGroup // the accept loop and every connection's goroutine
	in, out atomic.Int64   // bytes from and to clients on rsync sessions

	mu      sync.Mutex
	stopped bool                  // Close has started
	raw     map[net.Conn]struct{} // open connections, authenticated or not
	idle    *time.Timer           // nil while a connection is open
	current *session              // the rsync running or starting, if any
	res     Result
	kill    string // set by Kill: why a running rsync is killed at once
}

// Result is what an endpoint's sessions did so far.
type Result struct {
	// Sessions counts the rsync commands started.
	Sessions int
	// Refused counts refused exec, shell and subsystem requests.
	Refused int
	// Running is true while an rsync runs.
	Running bool
	// Exit is the exit status of the last rsync that ended (-1: none has
	// ended, or it was killed).
	Exit int
	// OK is true when the last rsync that ended exited 0.
	OK bool
	// Paths are the path arguments of the last rsync that ended, relative
	// to the transfer folder ("origin.dump" for /data/origin.dump): what an
	// upload wrote, what a download read.
	Paths []string
	// BytesIn and BytesOut count the rsync protocol bytes read from and
	// written to clients (file data plus rsync's own overhead).
	BytesIn, BytesOut int64
	// Err is the last refusal's reason, or the last line the last rsync
	// wrote to stderr, or why the server killed it. rsync's lines name
	// server paths: scrub them before showing Err to a customer.
	Err string
}

func newEndpoint(s *Server, t Transfer, dir string, ln net.Listener) *Endpoint {
	e := &Endpoint{
		s:       s,
		t:       t,
		dir:     dir,
		ln:      ln,
		port:    ln.Addr().(*net.TCPAddr).Port,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		raw:     map[net.Conn]struct{}{},
		res:     Result{Exit: -1},
	}
	e.logger = s.logger.With("request_id", t.RequestID, "direction", t.Direction.String(), "port", e.port)
	e.sshCfg = &gossh.ServerConfig{
		Config:            gossh.Config{Ciphers: s.cfg.Ciphers},
		MaxAuthTries:      6,
		ServerVersion:     "SSH-2.0-upgrade-server",
		PublicKeyCallback: e.authenticate,
	}
	for _, k := range s.cfg.HostSigners {
		e.sshCfg.AddHostKey(k)
	}
	return e
}

func (e *Endpoint) start() {
	e.logger.Info("rsync endpoint open", "dir", e.dir)
	e.mu.Lock()
	e.armIdle()
	e.mu.Unlock()
	e.wg.Add(1)
	go e.acceptLoop()
}

// Port is the TCP port the endpoint listens on.
func (e *Endpoint) Port() int { return e.port }

// KnownHosts returns the known_hosts lines an OpenSSH client needs to
// reach this endpoint as host with StrictHostKeyChecking=yes, one per host
// key, each ending in a newline: "[host]:port type base64", or
// "host type base64" on port 22. host is the name the client connects to;
// a ":port" suffix (the assigned host URI's HTTPS port) is dropped, as
// rsync's ssh does not connect to it.
func (e *Endpoint) KnownHosts(host string) string {
	if h, p, err := net.SplitHostPort(host); err == nil && p != "" && strings.Trim(p, "0123456789") == "" {
		host = h
	}
	addr := knownhosts.Normalize(net.JoinHostPort(strings.ToLower(host), strconv.Itoa(e.port)))
	var b strings.Builder
	for _, s := range e.s.cfg.HostSigners {
		b.WriteString(knownhosts.Line([]string{addr}, s.PublicKey()))
		b.WriteByte('\n')
	}
	return b.String()
}

// Done is closed once the endpoint has closed: by Close, Server.Close or
// the idle limit.
func (e *Endpoint) Done() <-chan struct{} { return e.done }

// Result returns what the endpoint's sessions did so far.
func (e *Endpoint) Result() Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res
	r.BytesIn, r.BytesOut = e.in.Load(), e.out.Load()
	return r
}

// Close stops accepting connections, lets a running rsync finish for up
// to Config.StopGrace, then kills it (its client gets up to 2 s more to
// hear why), closes every connection and waits for them. It returns nil
// once the endpoint is closed; calling it again waits for the same.
func (e *Endpoint) Close() error {
	e.once.Do(e.shutdown)
	<-e.done
	return nil
}

// Kill closes the endpoint as Close does, but kills a running rsync at
// once, telling its client reason.
func (e *Endpoint) Kill(reason string) {
	e.once.Do(func() {
		e.mu.Lock()
		e.kill = reason
		e.mu.Unlock()
		e.shutdown()
	})
	<-e.done
}

func (e *Endpoint) shutdown() {
	e.mu.Lock()
	e.stopped = true
	close(e.closing)
	if e.idle != nil {
		e.idle.Stop()
	}
	cur, kill := e.current, e.kill
	e.mu.Unlock()
	e.ln.Close()
	switch {
	case cur != nil && kill != "":
		e.logger.Info("killing the running rsync", "reason", kill)
		cur.stop(kill)
	case cur != nil:
		t := time.NewTimer(e.s.cfg.StopGrace)
		select {
		case <-cur.done:
		case <-t.C:
			e.logger.Info("killing the running rsync: the endpoint closes")
			cur.stop("the transfer was closed by the server while rsync was running")
		}
		t.Stop()
	}
	e.mu.Lock()
	for c := range e.raw {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	e.s.release(e)
	r := e.Result()
	e.logger.Info("rsync endpoint closed", "sessions", r.Sessions, "refused", r.Refused, "ok", r.OK,
		"bytes_in", r.BytesIn, "bytes_out", r.BytesOut)
	close(e.done)
}

// armIdle starts the idle clock; e.mu is held.
func (e *Endpoint) armIdle() {
	if e.stopped {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(e.s.cfg.IdleTimeout, func() {
		e.mu.Lock()
		fire := e.idle == t && !e.stopped
		e.mu.Unlock()
		if fire {
			e.logger.Info("rsync endpoint idle: closing", "idle_timeout", e.s.cfg.IdleTimeout.String())
			e.Close()
		}
	})
	e.idle = t
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	var backoff time.Duration
	for {
		c, err := e.ln.Accept()
		if err != nil {
			select {
			case <-e.closing:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				e.logger.Error("accept", "err", err)
				time.Sleep(backoff)
				continue
			}
			e.logger.Error("accept: the endpoint closes", "err", err)
			go e.Close()
			return
		}
		backoff = 0
		e.mu.Lock()
		if e.stopped || len(e.raw) >= maxConns {
			full := !e.stopped
			e.mu.Unlock()
			if full {
				e.logger.Info("connection refused: too many open", "remote", sshauth.RemoteHost(c.RemoteAddr()))
			}
			c.Close()
			continue
		}
		e.raw[c] = struct{}{}
		if e.idle != nil {
			e.idle.Stop()
			e.idle = nil
		}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serveConn(c)
	}
}

func (e *Endpoint) connClosed(c net.Conn) {
	e.mu.Lock()
	delete(e.raw, c)
	if len(e.raw) == 0 {
		e.armIdle()
	}
	e.mu.Unlock()
	e.wg.Done()
}

// authenticate lets in user odoo with the transfer's key, and nothing
// else. Failures from one address are slowed down.
func (e *Endpoint) authenticate(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	host := sshauth.RemoteHost(meta.RemoteAddr())
	e.s.limiter.Wait(e.closing, host)
	if meta.User() == sshUser && subtle.ConstantTimeCompare(key.Marshal(), e.t.Key.Marshal()) == 1 {
		e.s.limiter.Succeed(host)
		return &gossh.Permissions{}, nil
	}
	e.s.limiter.Fail(host)
	e.logger.Info("ssh authentication refused", "remote", host, "user", truncate(printable(meta.User()), 64))
	return nil, errors.New("refused")
}

// serveConn runs one connection: the handshake within LoginGrace, then
// session channels; every other channel type (port forwarding) and every
// global request are refused.
func (e *Endpoint) serveConn(c net.Conn) {
	defer e.connClosed(c)
	defer c.Close()
	dc := &deadlineConn{Conn: c}
	c.SetDeadline(time.Now().Add(e.s.cfg.LoginGrace))
	sc, chans, reqs, err := gossh.NewServerConn(dc, e.sshCfg)
	if err != nil {
		e.logger.Debug("ssh handshake failed", "remote", sshauth.RemoteHost(c.RemoteAddr()), "err", err)
		return
	}
	dc.setIdle(4 * e.s.cfg.ClientAlive)
	logger := e.logger.With("remote", sshauth.RemoteHost(c.RemoteAddr()))
	logger.Debug("ssh connection")
	gone := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Go(func() { gossh.DiscardRequests(reqs) })
	cwg.Go(func() { keepAlive(sc, e.s.cfg.ClientAlive, gone) })
	var open atomic.Int32
	for nc := range chans {
		if nc.ChannelType() != "session" {
			logger.Info("ssh channel refused", "type", truncate(printable(nc.ChannelType()), 64))
			nc.Reject(gossh.Prohibited, "only rsync sessions are served here")
			continue
		}
		if open.Add(1) > maxChannels {
			open.Add(-1)
			nc.Reject(gossh.ResourceShortage, "too many sessions")
			continue
		}
		cwg.Go(func() {
			defer open.Add(-1)
			e.handleSession(nc, c, logger)
		})
	}
	close(gone)
	c.Close()
	cwg.Wait()
}

// keepAlive asks the client for an answer every interval, as OpenSSH's
// ClientAliveInterval does: the answer is a read, which pushes the
// connection's read deadline back; a dead client's connection is closed
// by that deadline.
func keepAlive(sc *gossh.ServerConn, every time.Duration, gone <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-gone:
			return
		case <-t.C:
			if _, _, err := sc.SendRequest("keepalive@openssh.com", true, nil); err != nil {
				return
			}
		}
	}
}

// deadlineConn pushes its read deadline back on reads once idle is set
// (at most every idle/8, to keep deadline updates off the data path).
type deadlineConn struct {
	net.Conn
	idle atomic.Int64 // nanoseconds; 0: deadlines are left alone
	last time.Time    // when the deadline was last pushed; reads are serial
}

// setIdle replaces the login deadline by the idle one: a read already
// waiting gets it too.
func (c *deadlineConn) setIdle(d time.Duration) {
	c.idle.Store(int64(d))
	c.Conn.SetWriteDeadline(time.Time{})
	c.Conn.SetReadDeadline(time.Now().Add(d))
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if d := time.Duration(c.idle.Load()); d > 0 {
		if now := time.Now(); now.Sub(c.last) > d/8 {
			c.Conn.SetReadDeadline(now.Add(d))
			c.last = now
		}
	}
	return c.Conn.Read(p)
}
