package rsyncd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// mungedDir is the prefix rsync's --munge-links puts before every
// uploaded link's target. Munged links are unusable only while it does
// not exist (rsync's daemon refuses to munge when it does; so do we).
const mungedDir = "/rsyncd-munged"

// session is one exec request's rsync.
type session struct {
	done chan struct{}  // closed when the rsync has ended and been accounted
	io   sync.WaitGroup // the goroutine feeding rsync's stdin
	conn net.Conn       // the session's connection

	mu     sync.Mutex
	pid    int    // rsync's process group: 0 before the start, -1 once reaped
	killed string // why the server killed it ("": it did not)
}

func newSession(conn net.Conn) *session {
	return &session{done: make(chan struct{}), conn: conn}
}

// kill kills the rsync's process group, or keeps it from starting.
func (s *session) kill(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid < 0 {
		return
	}
	if s.killed == "" {
		s.killed = reason
	}
	if s.pid > 0 {
		syscall.Kill(-s.pid, syscall.SIGKILL)
	}
}

// stop kills the rsync and waits for its session to end, telling its
// client why; if that client does not read (a dead connection: the
// reason a client runs a new rsync), it closes the connection.
func (s *session) stop(reason string) {
	s.kill(reason)
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-s.done:
		return
	case <-t.C:
	}
	s.conn.Close()
	<-s.done
}

// handleSession serves one session channel: one exec request running an
// accepted rsync command. Shell and subsystem requests, and refused
// commands, get a line on stderr and exit status 1 (OpenSSH prints the
// line and exits); pty, X11, agent forwarding and env requests are
// refused (env is never passed on).
func (e *Endpoint) handleSession(nc gossh.NewChannel, conn net.Conn, logger *slog.Logger) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	var sess *session
	answered := false // an exec, shell or subsystem request was answered
	for req := range reqs {
		switch req.Type {
		case "exec", "shell", "subsystem":
			if answered {
				req.Reply(false, nil)
				continue
			}
			answered = true
			req.Reply(true, nil)
			var p struct{ Value string }
			if req.Type != "shell" && gossh.Unmarshal(req.Payload, &p) != nil {
				e.refuseSession(ch, refuse("malformed %s request", req.Type), "", logger)
				continue
			}
			switch req.Type {
			case "shell":
				e.refuseSession(ch, refuse("no shell here: this endpoint only runs rsync"), "", logger)
				continue
			case "subsystem":
				e.refuseSession(ch, refuse("no %s subsystem here: this endpoint only runs rsync", truncate(printable(p.Value), 40)), "", logger)
				continue
			}
			cmd, err := parseCommand(p.Value, e.t.Direction)
			if err == nil {
				err = e.checkPaths(cmd)
			}
			if err != nil {
				e.refuseSession(ch, err, p.Value, logger)
				continue
			}
			logger.Debug("rsync command accepted", "command", p.Value)
			sess = newSession(conn)
			go e.run(ch, cmd, sess, logger)
		case "env", "window-change", "signal", "eow@openssh.com", "keepalive@openssh.com":
			req.Reply(false, nil)
		default: // pty-req, x11-req, auth-agent-req@openssh.com, …
			logger.Info("ssh request refused", "type", truncate(printable(req.Type), 64))
			req.Reply(false, nil)
		}
	}
	// The channel is closed, or the connection gone: end the rsync.
	if sess != nil {
		sess.kill("the client closed the session")
		<-sess.done
		sess.io.Wait()
	}
	ch.Close()
}

// refuseSession tells the client why, on stderr, and ends the session
// with exit status 1.
func (e *Endpoint) refuseSession(ch gossh.Channel, err error, line string, logger *slog.Logger) {
	msg := "internal error"
	var r *refusal
	if errors.As(err, &r) {
		msg = r.msg
	} else {
		logger.Error("rsync session", "err", err)
	}
	logger.Info("rsync session refused", "reason", msg, "command", truncate(printable(line), 200))
	fmt.Fprintf(ch.Stderr(), "upgrade-server: %s\n", msg)
	sendExit(ch, 1)
	ch.Close()
	e.mu.Lock()
	e.res.Refused++
	e.res.Err = msg
	e.mu.Unlock()
}

func sendExit(ch gossh.Channel, status int) {
	ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{uint32(status)}))
}

// checkPaths refuses path arguments that go through a symbolic link in
// the transfer folder (an uploaded link is munged, but a link the folder
// got some other way would be followed by the kernel), and uploads while
// rsync's munged links would be usable.
func (e *Endpoint) checkPaths(c *command) error {
	if e.t.Direction == Upload {
		if _, err := os.Lstat(mungedDir); err == nil {
			e.logger.Error(mungedDir + " exists: rsync's --munge-links cannot make uploaded symbolic links unusable; uploads are refused until it is removed")
			return refuse("the server cannot take uploads now (unsafe configuration); tell its administrator")
		}
	}
	for _, p := range c.paths {
		rel := strings.TrimSuffix(p, "/")
		cur, shown := e.dir, "/data"
		for _, comp := range strings.Split(rel, "/") {
			cur, shown = filepath.Join(cur, comp), shown+"/"+comp
			fi, err := os.Lstat(cur)
			if err != nil {
				break // missing: rsync creates it, or reports it
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				return refuse("path %s is a symbolic link", shown)
			}
			if !fi.IsDir() {
				break
			}
		}
	}
	return nil
}

// argv is the rsync command line: the client's options, then the ones
// that confine it, "--" and the paths relative to the working directory.
// An upload's symbolic links are munged (their targets start with
// /rsyncd-munged/, so none can be followed), it creates no device or
// special file, no setuid or setgid file, and changes no owner even when
// rsync runs as root. Filter merge files that the client names over the
// protocol must lie in the transfer folder (both ways). The client's
// bundle cannot make a sender follow links (-L, -k, --copy-unsafe-links
// are refused) and the paths were checked by checkPaths.
func (e *Endpoint) argv(c *command) []string {
	argv := []string{"rsync", "--server"}
	argv = append(argv, c.opts...)
	if e.t.Direction == Upload {
		argv = append(argv, "--munge-links", "--drop-D", "--no-super", "--chmod=ug-s")
	}
	argv = append(argv, "--confine-root="+e.dir, "--", ".")
	return append(argv, c.paths...)
}

// rsyncMemoryKiB bounds each rsync process's address space (its forks
// inherit the limit). A transfer needs tens of MiB: buffers, and some 120
// bytes a name of its file list; a hostile client's list of a hundred
// million names, a few bytes each on the wire, would take gigabytes
// before any file is written, and bring the host's OOM killer upon other
// processes (PostgreSQL, the server).
const rsyncMemoryKiB = 1 << 20

// shell sets the limit in the process that becomes rsync: setting it from
// here (prlimit) needs CAP_SYS_RESOURCE once rsync runs as the tools user,
// which containers drop; a process may always lower its own.
const shell = "/bin/sh"

// limited is the command line that runs argv (argv[0] being rsync's name)
// as the binary path under rsyncMemoryKiB. The arguments reach rsync as
// the shell's positional parameters, never parsed by it.
func limited(path string, argv []string) []string {
	return append([]string{"sh", "-c", "ulimit -v " + strconv.Itoa(rsyncMemoryKiB) + ` && exec "$0" "$@"`, path}, argv[1:]...)
}

// rsyncEnv is rsync's whole environment. No HOME: rsync reads
// $HOME/.popt even in server mode and honours the option aliases it
// defines (tested: an alias there turned an unknown option into
// --log-file=<anywhere>), and HOME in the transfer folder would let an
// upload write one.
func rsyncEnv() []string { return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"} }

// run runs an accepted command: rsync's stdin and stdout are the
// channel's data, its stderr the channel's stderr; its exit status is
// forwarded. A rsync still running on the endpoint is killed first (the
// client re-runs after a lost connection; it must not wait for the server
// to notice).
func (e *Endpoint) run(ch gossh.Channel, c *command, s *session, logger *slog.Logger) {
	defer close(s.done)
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		e.refuseSession(ch, refuse("the transfer is closed"), "", logger)
		return
	}
	prev := e.current
	e.current = s
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.current == s {
			e.current = nil
		}
		e.mu.Unlock()
	}()
	if prev != nil {
		logger.Info("a new rsync replaces the running one")
		prev.stop("a newer rsync on the same transfer replaced this one")
	}

	var pipes [6]*os.File // stdin r/w, stdout r/w, stderr r/w
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(pipes[:])
			e.refuseSession(ch, err, "", logger)
			return
		}
		pipes[i], pipes[i+1] = r, w
	}
	stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW := pipes[0], pipes[1], pipes[2], pipes[3], pipes[4], pipes[5]
	cmd := &exec.Cmd{
		Path:   shell,
		Args:   limited(e.s.rsync, e.argv(c)),
		Dir:    e.dir,
		Env:    rsyncEnv(),
		Stdin:  stdinR,
		Stdout: stdoutW,
		Stderr: stderrW,
		// No Pdeathsig: it fires when the forking thread ends, not the
		// process; if the server dies, rsync reads EOF and exits.
		SysProcAttr: &syscall.SysProcAttr{
			Credential: e.s.cfg.Credential,
			Setpgid:    true, // kill takes its children too
		},
	}
	s.mu.Lock()
	killed := s.killed
	var err error
	if killed == "" {
		err = cmd.Start()
		if err == nil {
			s.pid = cmd.Process.Pid
		}
	}
	s.mu.Unlock()
	closeAll([]*os.File{stdinR, stdoutW, stderrW})
	if killed != "" || err != nil {
		closeAll([]*os.File{stdinW, stdoutR, stderrR})
		if err == nil {
			err = refuse("%s", killed)
		}
		e.refuseSession(ch, err, "", logger)
		return
	}
	e.mu.Lock()
	e.res.Sessions++
	e.res.Running = true
	e.mu.Unlock()
	logger.Info("rsync started", "sender", c.sender, "paths", c.paths)

	s.io.Go(func() {
		buf := make([]byte, 256<<10)
		io.CopyBuffer(onlyWriter{stdinW}, counting{r: ch, n: &e.in}, buf)
		stdinW.Close()
	})
	tail := &tailWriter{}
	var errDone sync.WaitGroup
	errDone.Go(func() {
		drain(io.MultiWriter(tail, ch.Stderr()), stderrR, s)
		stderrR.Close()
	})
	drain(counting{w: ch, n: &e.out}, stdoutR, s)
	stdoutR.Close()
	errDone.Wait()
	werr := cmd.Wait()
	s.mu.Lock()
	s.pid = -1
	killed = s.killed
	s.mu.Unlock()

	exit, status := 0, 0
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			exit, status = -1, 128+int(ws.Signal())
		} else {
			exit, status = ee.ExitCode(), ee.ExitCode()
		}
	case werr != nil:
		exit, status = -1, 255
	}
	if killed != "" {
		fmt.Fprintf(ch.Stderr(), "upgrade-server: %s\n", killed)
	}
	sendExit(ch, status)
	ch.Close()

	e.mu.Lock()
	e.res.Running = false
	e.res.Exit = exit
	e.res.OK = exit == 0 && killed == ""
	e.res.Paths = slices.Clone(c.paths)
	switch {
	case killed != "":
		e.res.Err = "killed: " + killed
	case exit != 0:
		e.res.Err = tail.lastLine()
	default:
		e.res.Err = ""
	}
	e.mu.Unlock()
	logger.Info("rsync ended", "exit", exit, "killed", killed, "bytes_in", e.in.Load(), "bytes_out", e.out.Load())
}

// drain copies r to w until r ends; if w fails (the client is gone), it
// kills the rsync and reads r to its end.
func drain(w io.Writer, r io.Reader, s *session) {
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(w, onlyReader{r}, buf); err != nil {
		s.kill("the client went away")
		io.CopyBuffer(io.Discard, r, buf)
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// onlyWriter hides *os.File's ReadFrom, which io.CopyBuffer would call
// and which copies through a 32 KiB buffer of its own. With the caller's
// larger buffer one channel read takes every queued packet, and the
// channel sends one window adjustment for them.
type onlyWriter struct{ io.Writer }

// onlyReader hides *os.File's WriteTo, which io.CopyBuffer would call
// and which reads rsync's output 32 KiB at a time: with the caller's
// larger buffer, one read takes what the pipe holds and one channel write
// sends it as consecutive packets.
type onlyReader struct{ io.Reader }

// counting counts the bytes read from r or written to w into n.
type counting struct {
	r io.Reader
	w io.Writer
	n *atomic.Int64
}

func (c counting) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c counting) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// tailWriter keeps the end of what rsync wrote to stderr.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 1024

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailMax {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailMax:]...)
	}
	return len(p), nil
}

// lastLine is the last non-empty line written, made printable.
func (t *tailWriter) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.buf), "\r\n"), "\n")
	return truncate(printable(lines[len(lines)-1]), 300)
}

// printable replaces control characters, so that client-sent text cannot
// forge log lines or terminal sequences.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
