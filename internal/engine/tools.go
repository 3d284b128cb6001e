package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tools runs the programs that handle uploads (pg_restore, psql, pg_dump,
// the command engine): as an unprivileged OS user when the server runs as
// root, with an environment of their own (no secret of the server's), in
// a working folder that user owns.
type tools struct {
	cred *syscall.Credential // nil: this process's own user
	name string              // the OS user, for messages
}

// newTools picks the OS user tools run as: userName when this process is
// root (never root itself, nor a user in reserved), else this process's.
func newTools(userName string, reserved []uint32) (*tools, error) {
	if os.Geteuid() != 0 {
		name := strconv.Itoa(os.Geteuid())
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		return &tools{name: name}, nil
	}
	if userName == "" {
		userName = "nobody"
	}
	u, err := user.Lookup(userName)
	if err != nil {
		return nil, fmt.Errorf("engine: the tools user %q does not exist (UPGRADE_TOOLS_USER): running as root, the server runs the PostgreSQL tools and the command engine as an unprivileged user; create one (useradd --system upgrade-tools) or name another", userName)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("engine: the tools user %q has no numeric uid/gid", userName)
	}
	if uid == 0 {
		return nil, fmt.Errorf("engine: the tools user %q is root (UPGRADE_TOOLS_USER); name an unprivileged user", userName)
	}
	if slices.Contains(reserved, uint32(uid)) {
		return nil, fmt.Errorf("engine: the tools user %q also runs the embedded PostgreSQL (UPGRADE_TOOLS_USER); name another unprivileged user", userName)
	}
	return &tools{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, name: userName}, nil
}

// User names the OS user the tools run as.
func (t *tools) User() string { return t.name }

// uid is the tools user's id (-1: this process's own user).
func (t *tools) uid() int {
	if t.cred == nil {
		return -1
	}
	return int(t.cred.Uid)
}

// baseEnv is what every tool gets: no variable of the server's but PATH,
// the locale of messages and a home of its own.
func baseEnv(home string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "HOME=" + home, "TMPDIR=" + home,
		"PGPASSFILE=/dev/null", "PGSERVICEFILE=/dev/null", "PGCLIENTENCODING=UTF8", "PGCONNECT_TIMEOUT=30"}
	if tz := os.Getenv("TZ"); tz != "" {
		env = append(env, "TZ="+tz)
	}
	return env
}

// commandEnv is the command engine's environment: the request's own
// variables, then the server's, without its secrets (settings, database
// credentials, cloud keys), then extra; a later one wins. So a request
// cannot change a variable of the operator's (one the command reads, an
// add-ons path, say) by naming it in its env_vars.
func commandEnv(request, extra []string) []string {
	env := slices.Clone(request)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "UPGRADE_"), strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "AWS_"),
			k == "DATABASE_URL", k == "HOME", k == "TMPDIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// command prepares a tool run in dir with env.
func (t *tools) command(ctx context.Context, dir string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: t.cred, Setpgid: true}
	// Kill the whole group (a shell's children too) when ctx ends.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// workRoot returns where the runs' folders go: dir when the tools user can
// reach it, else a folder of this data directory's under the system's
// temporary directory (a data directory under /root, say, is closed to
// other users), made 0711 by this process, and refused if someone else
// made it first.
func (t *tools) workRoot(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	if t.cred == nil || traversable(dir, t.cred.Uid, t.cred.Gid) {
		return dir, nil
	}
	sum := sha256.Sum256([]byte(dir))
	tmp := filepath.Join(os.TempDir(), "upgrade-server-work-"+hex.EncodeToString(sum[:6]))
	if err := os.Mkdir(tmp, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	st, err := os.Lstat(tmp)
	if err != nil {
		return "", err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Geteuid() || st.Mode().Perm() != 0o711 {
		return "", fmt.Errorf("%s exists and is not this server's own folder (a directory of its user, mode 0711): remove it, or make the data directory reachable by the tools user", tmp)
	}
	return tmp, nil
}

// traversable reports whether uid/gid may search every folder from dir up.
func traversable(dir string, uid, gid uint32) bool {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		perm := st.Mode().Perm()
		switch {
		case sys.Uid == uid:
			perm &= 0o100
		case sys.Gid == gid:
			perm &= 0o010
		default:
			perm &= 0o001
		}
		if perm == 0 {
			return false
		}
		if p == "/" || p == "." {
			return true
		}
	}
}

// workDir is a run's working folder: owned by the tools user (who writes
// pg_dump's output, the filestore, the command's files there) and handled
// by the server only through an os.Root, so a link the tools user plants
// cannot make the server read or write outside it.
type workDir struct {
	path string
	root *os.Root
	t    *tools
}

// newWorkDir makes a private folder under parent for the tools user.
func (t *tools) newWorkDir(parent, name string) (*workDir, error) {
	if err := os.MkdirAll(parent, 0o711); err != nil {
		return nil, err
	}
	p := filepath.Join(parent, name)
	if err := os.RemoveAll(p); err != nil {
		return nil, err
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		return nil, err
	}
	if t.cred != nil {
		if err := os.Chown(p, int(t.cred.Uid), int(t.cred.Gid)); err != nil {
			os.Remove(p)
			return nil, err
		}
	}
	root, err := os.OpenRoot(p)
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	return &workDir{path: p, root: root, t: t}, nil
}

// Close removes the folder.
func (w *workDir) Close() error {
	w.root.Close()
	return os.RemoveAll(w.path)
}

// Path is the folder's absolute path (for the tools).
func (w *workDir) Path(name ...string) string {
	return filepath.Join(append([]string{w.path}, name...)...)
}

// mkdirAll makes folders inside, owned by the tools user.
func (w *workDir) mkdirAll(name string) error {
	if err := w.root.MkdirAll(name, 0o700); err != nil {
		return err
	}
	if w.t.cred == nil {
		return nil
	}
	// Chown every level made here (the top is the tools user's already).
	for p := filepath.Clean(name); p != "." && p != "/"; p = filepath.Dir(p) {
		if err := w.root.Lchown(p, int(w.t.cred.Uid), int(w.t.cred.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes r to a new file inside, owned by the tools user; it
// fails if the file exists (nothing a tool made is overwritten).
func (w *workDir) writeFile(name string, r io.Reader) (int64, error) {
	if dir := filepath.Dir(name); dir != "." {
		if err := w.mkdirAll(dir); err != nil {
			return 0, err
		}
	}
	f, err := w.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && w.t.cred != nil {
		err = w.root.Lchown(name, int(w.t.cred.Uid), int(w.t.cred.Gid))
	}
	return n, err
}

// errNotOurs: a file in the work folder that the tools did not make (a
// hard link to another user's file) is never read.
var errNotOurs = errors.New("not a plain file of the run's own")

// open opens a file a tool made, for the server to read: a plain file
// inside the folder, owned by the tools user.
func (w *workDir) open(name string) (*os.File, fs.FileInfo, error) {
	f, err := w.root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() || !w.ownedByTools(st) {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, errNotOurs)
	}
	return f, st, nil
}

func (w *workDir) ownedByTools(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	want := uint32(os.Geteuid())
	if w.t.cred != nil {
		want = w.t.cred.Uid
	}
	return sys.Uid == want
}

// walk calls fn for every plain file under dir (relative names), without
// following links; a file the tools did not make fails the walk.
func (w *workDir) walk(dir string, fn func(name string, f *os.File, st fs.FileInfo) error) error {
	return fs.WalkDir(w.root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link: %w", p, errNotOurs)
		}
		f, st, err := w.open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return fn(p, f, st)
	})
}

// fs is the folder dir of the work folder as an fs.FS for the server to
// read: a file opens only through open (a plain file the tools made, no
// link followed out), and a link shows as one, never followed.
func (w *workDir) fs(dir string) fs.FS { return workFS{w: w, dir: dir} }

// holdsFiles reports whether the folder dir of the work folder holds at
// least one file.
func (w *workDir) holdsFiles(dir string) bool {
	found := errors.New("found")
	err := fs.WalkDir(w.fs(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return found
		}
		return nil
	})
	return errors.Is(err, found)
}

type workFS struct {
	w   *workDir
	dir string
}

func (f workFS) path(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	return path.Join(f.dir, name), nil
}

func (f workFS) Open(name string) (fs.File, error) {
	p, err := f.path("open", name)
	if err != nil {
		return nil, err
	}
	st, err := f.w.root.Lstat(p)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return f.w.root.FS().Open(p)
	}
	file, _, err := f.w.open(p)
	return file, err
}

func (f workFS) Stat(name string) (fs.FileInfo, error) {
	p, err := f.path("stat", name)
	if err != nil {
		return nil, err
	}
	return f.w.root.Lstat(p)
}

func (f workFS) ReadDir(name string) ([]fs.DirEntry, error) {
	p, err := f.path("readdir", name)
	if err != nil {
		return nil, err
	}
	return fs.ReadDir(f.w.root.FS(), p)
}
