// Package pgembed runs a private PostgreSQL cluster from the machine's server
// binaries: initdb on first use, started on a Unix socket only (no TCP port,
// no clash with a system PostgreSQL), reused across restarts, recovered after
// a crash and stopped when its last user closes it.
//
// Several processes may share one cluster directory: each holds a shared
// flock on <dir>.lock while it uses the cluster; start-up and shutdown take
// it exclusively, and only the last user stops the server.
//
// Authentication (pg_hba.conf, rewritten at every start): the superuser
// postgres only by peer authentication from this process's OS user; any
// other role only into the database of its own name, with its password
// (scram-sha-256). Scratch databases are made that way (a role per
// database), so a role that restores an upload can reach nothing else.
package pgembed

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries means initdb, pg_ctl and postgres were found neither on PATH
// nor under /usr/lib/postgresql/<version>/bin.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH " +
	"or under /usr/lib/postgresql/<version>/bin: install the PostgreSQL server " +
	"(Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; " +
	"macOS: brew install postgresql) or give a database URL")

// Options configure Start.
type Options struct {
	// Dir is the cluster directory, created by initdb when it holds no cluster.
	Dir string
	// Database is created when missing; URL points to it. Default "upgrade".
	Database string
	// SearchDirs overrides where binaries are looked for (tests); nil means
	// PATH, then /usr/lib/postgresql/*/bin newest first.
	SearchDirs []string
	Logger     *slog.Logger
	// RemoveOnStop removes the cluster's files when the last user stops it
	// (a throwaway cluster, as tests use).
	RemoveOnStop bool
}

// Cluster is a running embedded PostgreSQL.
type Cluster struct {
	dir     string
	binDir  string
	sockDir string
	db      string
	lock    *os.File
	cred    *syscall.Credential
	logger  *slog.Logger
	remove  bool
}

const superuser = "postgres"

// Start finds the binaries, creates the cluster if needed, starts it unless
// it already runs, and creates the database. It fails with ErrNoBinaries
// (wrapped) when no server binaries are installed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Database == "" {
		opts.Database = "upgrade"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	binDir, err := findBinaries(opts.SearchDirs)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, binDir: binDir, db: opts.Database, logger: opts.Logger.With("component", "pgembed"), remove: opts.RemoveOnStop}
	if c.cred, err = credential(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	// Start and stop are serialised by <dir>.start.lock; every user holds a
	// shared lock on <dir>.lock while it uses the cluster.
	guard, err := openLock(ctx, dir+".start.lock", syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer guard.Close()
	if c.lock, err = openLock(ctx, dir+".lock", syscall.LOCK_SH); err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		c.lock.Close() // releases the lock
		return nil, err
	}
	return c, nil
}

func openLock(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgembed: open lock: %w", err)
	}
	if err := flock(ctx, f, how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (c *Cluster) start(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	changed, err := c.writeAuthConfig()
	if err != nil {
		return err
	}
	running, sockDir, err := c.running()
	if err != nil {
		return err
	}
	if running {
		c.sockDir = sockDir
		c.logger.Info("reusing running embedded PostgreSQL", "dir", c.dir, "socket_dir", sockDir)
		if changed {
			// A cluster of an earlier release (trust) takes the new rules now.
			if err := c.reload(ctx); err != nil {
				return err
			}
		}
	} else {
		if err := c.launch(ctx); err != nil {
			return err
		}
	}
	return c.ensureDatabase(ctx)
}

// writeAuthConfig writes pg_hba.conf and pg_ident.conf: the superuser by
// peer authentication from this process's OS user only, any other role
// only into the database of its own name with its password. It reports
// whether a file changed.
func (c *Cluster) writeAuthConfig() (bool, error) {
	hba := "# upgrade-server: written at every start; edits are lost.\n" +
		"# The superuser: peer authentication, from the OS users of pg_ident.conf.\n" +
		"local  all       " + superuser + "  peer  map=upgrade\n" +
		"# Every other role: only into the database of its own name, with its password.\n" +
		"local  samerole  all       scram-sha-256\n"
	ident := "# upgrade-server: written at every start; edits are lost.\n"
	osUsers := []string{}
	if u, err := user.Current(); err == nil {
		osUsers = append(osUsers, u.Username)
	}
	if c.cred != nil {
		if u, err := user.LookupId(strconv.Itoa(int(c.cred.Uid))); err == nil && !slices.Contains(osUsers, u.Username) {
			osUsers = append(osUsers, u.Username)
		}
	}
	if len(osUsers) == 0 {
		// Without a user name the server cannot check the peer: fall back
		// to the socket directory's permissions alone.
		c.logger.Warn("this OS user has no name; the embedded PostgreSQL trusts connections as its superuser through its socket")
		hba = strings.Replace(hba, "peer  map=upgrade", "trust", 1)
	}
	for _, u := range osUsers {
		ident += fmt.Sprintf("upgrade  %s  %s\n", u, superuser)
	}
	changed := false
	for name, content := range map[string]string{"pg_hba.conf": hba, "pg_ident.conf": ident} {
		p := filepath.Join(c.dir, name)
		if old, err := os.ReadFile(p); err == nil && string(old) == content {
			continue
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			return false, fmt.Errorf("pgembed: %w", err)
		}
		if err := c.chown(tmp); err != nil {
			return false, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return false, fmt.Errorf("pgembed: %w", err)
		}
		changed = true
	}
	return changed, nil
}

func (c *Cluster) reload(ctx context.Context) error {
	out, err := c.command(ctx, "pg_ctl", "reload", "-D", c.dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgembed: reload: %w: %s", err, tail(out))
	}
	c.logger.Info("embedded PostgreSQL reloaded its authentication rules", "dir", c.dir)
	return nil
}

// running reports whether a postmaster serves the cluster, and where its
// socket is. A stale postmaster.pid (a crash, a reused pid) is removed.
func (c *Cluster) running() (bool, string, error) {
	pidFile := filepath.Join(c.dir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("pgembed: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
	if pid > 0 && isPostgres(pid) && len(lines) > 4 && strings.TrimSpace(lines[4]) != "" {
		sock := strings.TrimSpace(lines[4])
		if conn, err := net.DialTimeout("unix", filepath.Join(sock, ".s.PGSQL.5432"), 5*time.Second); err == nil {
			conn.Close()
			return true, sock, nil
		}
	}
	c.logger.Warn("removing stale postmaster.pid left by a crash", "dir", c.dir, "pid", pid)
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, "", fmt.Errorf("pgembed: remove stale pid file: %w", err)
	}
	return false, "", nil
}

func isPostgres(pid int) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		// No /proc (not Linux): trust signal 0.
		return syscall.Kill(pid, 0) == nil
	}
	name := strings.TrimSpace(string(comm))
	if name != "postgres" && name != "postmaster" {
		return false
	}
	// A zombie (killed, not yet reaped) is dead too.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

func (c *Cluster) initdb(ctx context.Context) error {
	tmp := c.dir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	if err := c.chown(tmp); err != nil {
		return err
	}
	c.logger.Info("creating embedded PostgreSQL cluster", "dir", c.dir, "bin_dir", c.binDir)
	out, err := c.command(ctx, "initdb", "-D", tmp, "-U", superuser, "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-sync").CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("pgembed: initdb %s: %w: %s", c.dir, err, tail(out))
	}
	conf := "\n# upgrade-server: embedded cluster, Unix socket only.\nlisten_addresses = ''\n" +
		"max_connections = 200\nshared_buffers = 128MB\nlogging_collector = off\n"
	f, err := os.OpenFile(filepath.Join(tmp, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("pgembed: configure: %w", err)
	}
	if err := os.Rename(tmp, c.dir); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	return nil
}

// socketDir picks <dir>/../postgres-run, or a short directory under the
// system temp dir when that path is too long for a Unix socket.
func (c *Cluster) socketDir() (string, error) {
	sock := c.dir + "-run"
	if len(sock)+len("/.s.PGSQL.5432") > 100 {
		sum := sha256.Sum256([]byte(c.dir))
		sock = filepath.Join(os.TempDir(), "upgrade-pg-"+hex.EncodeToString(sum[:6]))
	}
	// Traversable (not listable) by other users: the unprivileged OS user
	// that runs the PostgreSQL tools on uploads connects through it, as a
	// role that can only reach its own database.
	if err := os.MkdirAll(sock, 0o711); err != nil {
		return "", fmt.Errorf("pgembed: socket dir: %w", err)
	}
	if err := os.Chmod(sock, 0o711); err != nil {
		return "", fmt.Errorf("pgembed: socket dir: %w", err)
	}
	if err := c.chown(sock); err != nil {
		return "", err
	}
	return sock, nil
}

func (c *Cluster) launch(ctx context.Context) error {
	sock, err := c.socketDir()
	if err != nil {
		return err
	}
	// A crashed postmaster also leaves its socket lock behind.
	lockFile := filepath.Join(sock, ".s.PGSQL.5432.lock")
	if b, err := os.ReadFile(lockFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
		if pid <= 0 || !isPostgres(pid) {
			os.Remove(lockFile)
			os.Remove(filepath.Join(sock, ".s.PGSQL.5432"))
		}
	}
	logFile := filepath.Join(c.dir, "server.log")
	opts := "-c listen_addresses='' -k " + shellQuote(sock)
	out, err := c.command(ctx, "pg_ctl", "start", "-w", "-t", "120", "-D", c.dir, "-l", logFile, "-o", opts).CombinedOutput()
	if err != nil {
		logTail, _ := os.ReadFile(logFile)
		return fmt.Errorf("pgembed: start PostgreSQL in %s: %w: %s %s", c.dir, err, tail(out), tail(logTail))
	}
	c.sockDir = sock
	c.logger.Info("started embedded PostgreSQL", "dir", c.dir, "socket_dir", sock)
	return nil
}

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgembed: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, c.db).Scan(&exists); err != nil {
		return fmt.Errorf("pgembed: check database: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.db}.Sanitize()); err != nil {
		return fmt.Errorf("pgembed: create database %s: %w", c.db, err)
	}
	return nil
}

// URL returns a connection URL for database db ("" means the cluster's own).
func (c *Cluster) URL(db string) string {
	if db == "" {
		db = c.db
	}
	u := url.URL{Scheme: "postgres", User: url.User(superuser), Path: "/" + db,
		RawQuery: url.Values{"host": {c.sockDir}, "sslmode": {"disable"}}.Encode()}
	return u.String()
}

// UID is the OS user id the server runs as, or -1 when it runs as this
// process's own user.
func (c *Cluster) UID() int {
	if c.cred == nil {
		return -1
	}
	return int(c.cred.Uid)
}

// SocketDir is the directory of the cluster's Unix socket (port 5432).
func (c *Cluster) SocketDir() string { return c.sockDir }

// Close stops the server unless another process still uses the cluster.
func (c *Cluster) Close(ctx context.Context) error {
	defer c.lock.Close()
	guard, err := openLock(ctx, c.dir+".start.lock", syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer guard.Close()
	if err := syscall.Flock(int(c.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		c.logger.Info("embedded PostgreSQL left running for its other users", "dir", c.dir)
		return nil
	}
	out, err := c.command(ctx, "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", c.dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgembed: stop: %w: %s", err, tail(out))
	}
	c.logger.Info("stopped embedded PostgreSQL", "dir", c.dir)
	if c.remove {
		// Under the start lock: a process starting now waits, then finds no
		// cluster and makes a new one.
		if err := os.RemoveAll(c.dir); err != nil {
			return fmt.Errorf("pgembed: remove: %w", err)
		}
		if c.sockDir != "" {
			os.RemoveAll(c.sockDir)
		}
	}
	return nil
}

// Kill stops the server at once, as a crash would (tests).
func (c *Cluster) Kill() error {
	b, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return err
	}
	c.lock.Close()
	return syscall.Kill(pid, syscall.SIGKILL)
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	cmd.Dir = "/"
	return cmd
}

// credential: PostgreSQL refuses to run as root, so root runs it as the
// postgres user (or nobody).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("pgembed: running as root and neither a postgres nor a nobody user exists to run PostgreSQL")
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	return nil
}

func findBinaries(search []string) (string, error) {
	if search == nil {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				search = append(search, filepath.Dir(real))
			}
			search = append(search, filepath.Dir(p))
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
		search = append(search, dirs...)
	}
	for _, d := range search {
		ok := true
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if st, err := os.Stat(filepath.Join(d, name)); err != nil || st.IsDir() {
				ok = false
				break
			}
		}
		if ok {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return int(v * 100)
}

func flock(ctx context.Context, f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("pgembed: lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgembed: waiting for lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// tail keeps the last lines of a command's output for an error message.
func tail(b []byte) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}
