package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"
)

// A set is a group of files of a request stored under one prefix: the
// files of a directory-format dump ("upload-ab12/toc.dat",
// "upload-ab12/3001.dat.gz"), a filestore. Its Name ends with "/"
// (SetName, Name.IsSet); its members are named relative to it and may hold
// slashes ("ab/ab12…" in a filestore).
//
// A set is committed as a whole: its members are written first, then its
// manifest, "<name>.manifest" beside the set ("upload-ab12.manifest"),
// which lists every member's name, size and sha256. A set without its
// manifest is not complete: it is never opened, listed or served, and the
// sweeps remove it (see SweepPartials). Only the members the manifest
// lists are ever read.
//
// The manifest is text: the line "upgrade-server set 1", then one line per
// member, sorted by name: "<sha256 hex> <size> <name>". Its own sha256 is
// the content hash of the whole set (Received.SHA256 of a commit).

// ManifestSuffix ends the name of a set's manifest; no file of a request
// has a name ending with it.
const ManifestSuffix = ".manifest"

const manifestHeader = "upgrade-server set 1"

// MaxSetMembers is the most files a set may hold.
const MaxSetMembers = 1_000_000

// maxMemberName caps a member's name, and maxComponent each of its parts.
const (
	maxMemberName = 1024
	maxComponent  = 255
)

// ErrRefused: a folder to commit as a set holds something a set may not
// hold (a link, a device or pipe, a hidden or malformed name). The error's
// text names the member (relative to the folder, never a server path).
var ErrRefused = errors.New("refused")

// SetName is the set of files under prefix p: SetName("upload-ab12") and
// SetName("upload-ab12/") are both Name("upload-ab12/").
func SetName(p string) Name { return Name(strings.TrimSuffix(p, "/") + "/") }

// IsSet reports whether n names a set (it ends with "/").
func (n Name) IsSet() bool { return strings.HasSuffix(string(n), "/") }

// SetMember is one file of a committed set.
type SetMember struct {
	// Name is relative to the set, slash-separated: "toc.dat", "ab/ab12…".
	Name   string
	Size   int64
	SHA256 string // hex
}

// setKeys returns a set's prefix key ("<id>/<base>/"), its manifest's key
// and its commit marker's key.
func setKeys(id int64, set Name) (prefixKey, manifestKey, markerKey string, err error) {
	base, ok := strings.CutSuffix(string(set), "/")
	if !ok {
		return "", "", "", fmt.Errorf("files: %q of request %d is not a set name (it ends with /)", string(set), id)
	}
	k, err := key(id, Name(base))
	if err != nil {
		return "", "", "", err
	}
	return k + "/", k + ManifestSuffix, setMarkers + k, nil
}

// setMarkers holds a marker per set being committed or removed:
// ".sets/<id>/<base>". A commit rewrites its marker every setHeartbeat; a
// marker older than setStale belongs to a process that died, and the sweep
// finishes its work (see sweepSets).
const setMarkers = ".sets/"

const (
	setHeartbeat = 15 * time.Second
	setStale     = 4 * setHeartbeat
)

// checkMember checks the name of a member of a set (a file's path
// relative to the folder committed): relative, slash-separated, each part
// non-empty, not "." or "..", not hidden (rsync's temporary files start
// with "."), no backslash or control character, valid UTF-8.
func checkMember(name string) error {
	bad := func(why string) error {
		shown := name
		if len(shown) > 80 {
			shown = shown[:80] + "…"
		}
		return fmt.Errorf("files: %q %s: %w", shown, why, ErrRefused)
	}
	switch {
	case name == "":
		return bad("has no name")
	case len(name) > maxMemberName:
		return bad(fmt.Sprintf("is a name longer than %d bytes", maxMemberName))
	case !utf8.ValidString(name):
		return bad("is not valid UTF-8")
	case strings.ContainsRune(name, '\\'):
		return bad("has a backslash in its name")
	}
	for _, c := range name {
		if unicode.IsControl(c) || (unicode.Is(unicode.Cf, c) && c != '\u200d') {
			return bad("has a control character in its name")
		}
	}
	for _, part := range strings.Split(name, "/") {
		switch {
		case part == "" || part == "." || part == "..":
			return bad("is not a plain relative name")
		case strings.HasPrefix(part, "."):
			return bad("is hidden (a name starting with \".\", such as a transfer's temporary file)")
		case len(part) > maxComponent:
			return bad(fmt.Sprintf("has a part longer than %d bytes", maxComponent))
		}
	}
	return nil
}

// ---- Reading ----

// Set is a committed set open for reading. It is an fs.FS (also
// fs.ReadDirFS and fs.StatFS) of the members its manifest lists, folders
// implied by their names; every member opens as an Object (seekable,
// readable at offsets). The context given to OpenSet bounds every read.
type Set struct {
	s       *Store
	ctx     context.Context
	id      int64
	name    Name
	prefix  string // the members' key prefix
	members []SetMember
	byName  map[string]int
	sum     Received
	modTime time.Time

	dirsOnce sync.Once
	dirs     map[string][]fs.DirEntry
}

// OpenSet opens a request's committed set; ErrNotExist when it has none
// (or only an incomplete one).
func (s *Store) OpenSet(ctx context.Context, id int64, set Name) (*Set, error) {
	prefixKey, manifestKey, _, err := setKeys(id, set)
	if err != nil {
		return nil, err
	}
	members, sum, info, err := s.readManifest(ctx, manifestKey)
	if err != nil {
		return nil, err
	}
	t := &Set{s: s, ctx: ctx, id: id, name: set, prefix: prefixKey, members: members, sum: sum,
		modTime: info.ModTime, byName: make(map[string]int, len(members))}
	for i, m := range members {
		t.byName[m.Name] = i
	}
	return t, nil
}

// readManifest reads and checks a set's manifest.
func (s *Store) readManifest(ctx context.Context, manifestKey string) ([]SetMember, Received, Info, error) {
	o, err := s.b.open(ctx, manifestKey)
	if err != nil {
		return nil, Received{}, Info{}, err
	}
	defer o.Close()
	info := o.Info()
	h := sha256.New()
	members, err := parseManifest(io.TeeReader(o, h))
	if err != nil {
		return nil, Received{}, Info{}, fmt.Errorf("files: the manifest of %s: %w", manifestKey, err)
	}
	var total int64
	for _, m := range members {
		total += m.Size
	}
	return members, Received{Size: total, SHA256: hex.EncodeToString(h.Sum(nil))}, info, nil
}

func parseManifest(r io.Reader) ([]SetMember, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	if !sc.Scan() || sc.Text() != manifestHeader {
		return nil, errors.New("not a set manifest")
	}
	var out []SetMember
	for sc.Scan() {
		line := sc.Text()
		sum, rest, ok1 := strings.Cut(line, " ")
		size, name, ok2 := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if !ok1 || !ok2 || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" || err != nil || n < 0 || checkMember(name) != nil {
			return nil, fmt.Errorf("line %d is malformed", len(out)+2)
		}
		if len(out) > 0 && out[len(out)-1].Name >= name {
			return nil, fmt.Errorf("line %d is out of order", len(out)+2)
		}
		if len(out) >= MaxSetMembers {
			return nil, errors.New("too many members")
		}
		out = append(out, SetMember{Name: name, Size: n, SHA256: sum})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func formatManifest(members []SetMember) []byte {
	var b bytes.Buffer
	b.WriteString(manifestHeader + "\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%s %d %s\n", m.SHA256, m.Size, m.Name)
	}
	return b.Bytes()
}

// Manifest returns the set's manifest as stored (an export carries it).
func (t *Set) Manifest() []byte { return formatManifest(t.members) }

// Name is the set's name.
func (t *Set) Name() Name { return t.name }

// Members lists the set's files, sorted by name.
func (t *Set) Members() []SetMember { return t.members }

// Received is the set as committed: the sum of its members' sizes, and the
// sha256 of its manifest.
func (t *Set) Received() Received { return t.sum }

// Member describes one member; false when the set has no such member.
func (t *Set) Member(name string) (SetMember, bool) {
	i, ok := t.byName[name]
	if !ok {
		return SetMember{}, false
	}
	return t.members[i], true
}

// OpenMember opens one member for reading; ErrNotExist when the manifest
// does not list it. A member whose stored size is not the manifest's
// fails (the store was changed behind the set's back).
func (t *Set) OpenMember(name string) (Object, error) {
	m, ok := t.Member(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotExist}
	}
	o, err := t.s.b.open(t.ctx, t.prefix+name)
	if err != nil {
		return nil, err
	}
	if o.Info().Size != m.Size {
		o.Close()
		return nil, fmt.Errorf("files: member %s of set %s of request %d is %d bytes, its manifest says %d", name, t.name, t.id, o.Info().Size, m.Size)
	}
	return o, nil
}

// Open opens a member, or a folder its members' names imply (fs.FS).
func (t *Set) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if i, ok := t.byName[name]; ok {
		o, err := t.OpenMember(name)
		if err != nil {
			return nil, err
		}
		return &setFile{Object: o, fi: memberInfo{m: t.members[i], mod: t.modTime}}, nil
	}
	entries, ok := t.dirEntries()[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &setDir{fi: dirInfo{name: path.Base(name), mod: t.modTime}, entries: entries}, nil
}

// ReadDir lists a folder of the set (fs.ReadDirFS), sorted by name.
func (t *Set) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	entries, ok := t.dirEntries()[name]
	if !ok {
		if _, isFile := t.byName[name]; isFile {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	return append([]fs.DirEntry(nil), entries...), nil
}

// Stat describes a member or a folder (fs.StatFS).
func (t *Set) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	if i, ok := t.byName[name]; ok {
		return memberInfo{m: t.members[i], mod: t.modTime}, nil
	}
	if _, ok := t.dirEntries()[name]; ok {
		return dirInfo{name: path.Base(name), mod: t.modTime}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

// dirEntries maps each folder ("." for the top) to its entries.
func (t *Set) dirEntries() map[string][]fs.DirEntry {
	t.dirsOnce.Do(func() {
		t.dirs = map[string][]fs.DirEntry{".": nil}
		for _, m := range t.members {
			name := m.Name
			var entry fs.DirEntry = fs.FileInfoToDirEntry(memberInfo{m: m, mod: t.modTime})
			for {
				dir := path.Dir(name)
				_, known := t.dirs[dir]
				t.dirs[dir] = append(t.dirs[dir], entry)
				if known || dir == "." {
					break
				}
				entry = fs.FileInfoToDirEntry(dirInfo{name: path.Base(dir), mod: t.modTime})
				name = dir
			}
		}
		for _, entries := range t.dirs {
			sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		}
	})
	return t.dirs
}

type memberInfo struct {
	m   SetMember
	mod time.Time
}

func (i memberInfo) Name() string       { return path.Base(i.m.Name) }
func (i memberInfo) Size() int64        { return i.m.Size }
func (i memberInfo) Mode() fs.FileMode  { return 0o444 }
func (i memberInfo) ModTime() time.Time { return i.mod }
func (i memberInfo) IsDir() bool        { return false }
func (i memberInfo) Sys() any           { return nil }

type dirInfo struct {
	name string
	mod  time.Time
}

func (i dirInfo) Name() string       { return i.name }
func (i dirInfo) Size() int64        { return 0 }
func (i dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (i dirInfo) ModTime() time.Time { return i.mod }
func (i dirInfo) IsDir() bool        { return true }
func (i dirInfo) Sys() any           { return nil }

type setFile struct {
	Object
	fi memberInfo
}

func (f *setFile) Stat() (fs.FileInfo, error) { return f.fi, nil }

type setDir struct {
	fi      dirInfo
	entries []fs.DirEntry
	off     int
}

func (d *setDir) Stat() (fs.FileInfo, error) { return d.fi, nil }
func (d *setDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.fi.name, Err: errors.New("is a directory")}
}
func (d *setDir) Close() error { return nil }

func (d *setDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return append([]fs.DirEntry(nil), rest...), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.off += n
	return append([]fs.DirEntry(nil), rest[:n]...), nil
}

// ---- Committing ----

// memberSource is where a commit reads the files of a set.
type memberSource struct {
	files []SetMember // names and sizes, as scanned
	// open opens a file scanned; local is set when it is a file of this
	// host that the store may link rather than copy (CommitDir).
	open func(m SetMember) (r io.ReadCloser, local *localFile, err error)
}

// localFile is a file of a staging folder, open, with its path.
type localFile struct {
	f    *os.File
	path string
	st   fs.FileInfo
	// synced, when not nil, reports the fsync that a link into the store
	// started (see local.linkFile); it must be received before f closes.
	synced <-chan error
}

// CommitDir commits every regular file under the local folder dir
// (recursively; folders are implied by their files' names) as the set
// set of request id, replacing a set of that name. It refuses (ErrRefused,
// before anything is stored) symbolic links, devices, pipes, sockets,
// names that are hidden (starting with ".": rsync's temporary files, a
// transfer that did not finish) or malformed, files with other links
// whose owner is not the folder's (hard links its writer made to someone
// else's files), and more than max bytes in all (ErrTooLarge; max <= 0:
// no limit), and more than MaxSetMembers files; and dir itself when it is
// not a folder (a link is not followed). The result's Size is the sum of
// the members' sizes, its SHA256 that of the manifest.
//
// Each file is read once, hashed on the way. On the local backend a file
// of the same file system that has no other link becomes the store's by a
// hard link (then owned by this process's user, mode 0600: the folder's
// writer must have stopped, and the folder is the caller's to remove
// after); other files are copied. On S3 the files upload in parallel.
func (s *Store) CommitDir(ctx context.Context, id int64, set Name, dir string, max int64) (Received, error) {
	folder, err := os.Lstat(dir)
	if err != nil {
		return Received{}, fmt.Errorf("files: the folder to commit: %w", err)
	}
	if !folder.IsDir() {
		return Received{}, fmt.Errorf("files: the folder to commit is not a folder: %w", ErrRefused)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Received{}, fmt.Errorf("files: the folder to commit: %w", err)
	}
	defer root.Close()
	// Opened is the folder looked at, not a link swapped in meanwhile.
	if top, err := root.Stat("."); err != nil || !os.SameFile(folder, top) {
		return Received{}, errors.Join(err, fmt.Errorf("files: the folder to commit changed while it was committed: %w", ErrRefused))
	}
	src := memberSource{}
	src.files, err = scanMembers(root.FS(), max, func(p string, st fs.FileInfo) error { return foreignLink(p, st, folder) })
	if err != nil {
		return Received{}, err
	}
	src.open = func(m SetMember) (io.ReadCloser, *localFile, error) {
		p := filepath.FromSlash(m.Name)
		before, err := root.Lstat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("files: %w", err)
		}
		f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("files: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("files: %w", err)
		}
		// Opened is what was scanned, still a plain file: nothing swapped
		// a link or a pipe in meanwhile.
		if !st.Mode().IsRegular() || !os.SameFile(before, st) {
			f.Close()
			return nil, nil, fmt.Errorf("files: %q changed while it was committed: %w", m.Name, ErrRefused)
		}
		if err := foreignLink(m.Name, st, folder); err != nil {
			f.Close()
			return nil, nil, err
		}
		return f, &localFile{f: f, path: filepath.Join(dir, p), st: st}, nil
	}
	return s.commitSet(ctx, id, set, src)
}

// CommitFS commits every regular file of fsys as the set set of request
// id, as CommitDir does (the same refusals, limits and manifest), always
// copying: for files another user wrote that must not become the
// store's own (a tool's output in its working folder).
func (s *Store) CommitFS(ctx context.Context, id int64, set Name, fsys fs.FS, max int64) (Received, error) {
	files, err := scanMembers(fsys, max, nil)
	if err != nil {
		return Received{}, err
	}
	return s.commitSet(ctx, id, set, memberSource{files: files, open: func(m SetMember) (io.ReadCloser, *localFile, error) {
		f, err := fsys.Open(m.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("files: %w", err)
		}
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			f.Close()
			return nil, nil, errors.Join(err, fmt.Errorf("files: %q is not a plain file: %w", m.Name, ErrRefused))
		}
		return f, nil, nil
	}})
}

// scanMembers lists the regular files of fsys, refusing what a set may
// not hold (and, if check is set, what it refuses) before anything is
// written.
func scanMembers(fsys fs.FS, max int64, check func(p string, st fs.FileInfo) error) ([]SetMember, error) {
	var out []SetMember
	var total int64
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("files: the folder to commit: %w", err)
		}
		if p == "." {
			return nil
		}
		if err := checkMember(p); err != nil {
			return err
		}
		switch t := d.Type(); {
		case d.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("files: %q is a symbolic link: %w", p, ErrRefused)
		case t&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			return fmt.Errorf("files: %q is a device: %w", p, ErrRefused)
		case !t.IsRegular():
			return fmt.Errorf("files: %q is not a plain file: %w", p, ErrRefused)
		}
		st, err := d.Info()
		if err != nil {
			return fmt.Errorf("files: the folder to commit: %w", err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("files: %q is not a plain file: %w", p, ErrRefused)
		}
		if check != nil {
			if err := check(p, st); err != nil {
				return err
			}
		}
		if len(out) >= MaxSetMembers {
			return fmt.Errorf("files: the folder holds more than %d files: %w", MaxSetMembers, ErrRefused)
		}
		total += st.Size()
		if max > 0 && total > max {
			return ErrTooLarge
		}
		out = append(out, SetMember{Name: p, Size: st.Size()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// errSimulatedCrash stops a commit where a test asked, leaving what a
// process that died there would leave.
var errSimulatedCrash = errors.New("files: simulated crash")

// commitSet writes a set: a marker (kept fresh while the commit runs), the
// old set of that name removed, the members, a check that every member is
// stored whole, the manifest, the marker removed. A failure removes what
// was written; a crash leaves the marker, and the sweep removes the rest.
func (s *Store) commitSet(ctx context.Context, id int64, set Name, src memberSource) (_ Received, err error) {
	prefixKey, manifestKey, markerKey, err := setKeys(id, set)
	if err != nil {
		return Received{}, err
	}
	stop, err := s.startMarker(ctx, markerKey)
	if err != nil {
		return Received{}, &WriteError{err}
	}
	defer stop()
	defer func() {
		if err != nil && !errors.Is(err, errSimulatedCrash) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if rerr := s.b.removePrefix(cctx, prefixKey); rerr == nil {
				s.b.remove(cctx, markerKey)
			}
		}
	}()
	if err := s.b.remove(ctx, manifestKey); err != nil {
		return Received{}, &WriteError{err}
	}
	if err := s.b.removePrefix(ctx, prefixKey); err != nil {
		return Received{}, &WriteError{err}
	}
	members := make([]SetMember, len(src.files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.b.parallel())
	var written int
	var mu sync.Mutex
	for i, m := range src.files {
		g.Go(func() error {
			if s.crashAfter > 0 {
				mu.Lock()
				crash := written >= s.crashAfter
				mu.Unlock()
				if crash {
					return errSimulatedCrash
				}
			}
			sum, err := s.putMember(gctx, prefixKey+m.Name, m, src)
			if err != nil {
				return err
			}
			members[i] = SetMember{Name: m.Name, Size: m.Size, SHA256: sum}
			mu.Lock()
			written++
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Received{}, err
	}
	// Every member stored whole, or the set does not count (a sweep that
	// took this commit for a dead one removed some).
	stored, err := s.b.list(ctx, prefixKey)
	if err != nil {
		return Received{}, &WriteError{err}
	}
	sizes := make(map[string]int64, len(stored))
	for _, st := range stored {
		sizes[strings.TrimPrefix(string(st.Name), prefixKey)] = st.Size
	}
	var total int64
	for _, m := range members {
		if n, ok := sizes[m.Name]; !ok || n != m.Size {
			return Received{}, &WriteError{fmt.Errorf("member %s of set %s of request %d is missing after it was stored", m.Name, set, id)}
		}
		total += m.Size
	}
	s.b.syncDirs(prefixKey, members)
	manifest := formatManifest(members)
	sk, err := s.b.create(ctx, manifestKey)
	if err != nil {
		return Received{}, &WriteError{err}
	}
	if _, err := sk.Write(manifest); err != nil {
		sk.abort()
		return Received{}, &WriteError{err}
	}
	if err := sk.commit(); err != nil {
		return Received{}, &WriteError{err}
	}
	stop()
	s.b.remove(context.WithoutCancel(ctx), markerKey) // a marker left is swept
	sum := sha256.Sum256(manifest)
	return Received{Size: total, SHA256: hex.EncodeToString(sum[:])}, nil
}

// putMember stores one member and returns its sha256.
func (s *Store) putMember(ctx context.Context, k string, m SetMember, src memberSource) (string, error) {
	r, lf, err := src.open(m)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if lf != nil {
		linked, err := s.b.linkFile(ctx, k, lf)
		if err != nil {
			return "", &WriteError{err}
		}
		if linked {
			// Hashed while its fsync runs: both take about as long.
			h := sha256.New()
			bp := smallBufs.Get().(*[]byte)
			n, err := io.CopyBuffer(h, io.NewSectionReader(lf.f, 0, m.Size+1), *bp)
			smallBufs.Put(bp)
			if lf.synced != nil {
				if serr := <-lf.synced; serr != nil {
					return "", &WriteError{serr}
				}
			}
			if err != nil {
				return "", err
			}
			if n != m.Size {
				return "", fmt.Errorf("files: %q changed while it was committed: %w", m.Name, ErrRefused)
			}
			return hex.EncodeToString(h.Sum(nil)), nil
		}
	}
	sk, err := s.b.create(ctx, k)
	if err != nil {
		return "", &WriteError{err}
	}
	lr := &limitReader{r: r, left: m.Size}
	var n int64
	var sum []byte
	if m.Size > 4*copyBufSize {
		n, sum, err = copyHashing(ctx, sk, lr)
	} else {
		n, sum, err = copySmall(sk, lr)
	}
	if err == nil && n != m.Size {
		err = fmt.Errorf("files: %q changed while it was committed: %w", m.Name, ErrRefused)
	}
	if errors.Is(err, ErrTooLarge) {
		err = fmt.Errorf("files: %q grew while it was committed: %w", m.Name, ErrRefused)
	}
	if err != nil {
		sk.abort()
		return "", err
	}
	if err := sk.commit(); err != nil {
		return "", &WriteError{err}
	}
	return hex.EncodeToString(sum), nil
}

var smallBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copySmall copies and hashes a small file with a pooled buffer.
func copySmall(dst io.Writer, src io.Reader) (int64, []byte, error) {
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	h := sha256.New()
	var n int64
	for {
		k, err := src.Read(*bp)
		if k > 0 {
			if _, werr := dst.Write((*bp)[:k]); werr != nil {
				return n, nil, &WriteError{werr}
			}
			h.Write((*bp)[:k])
			n += int64(k)
		}
		if errors.Is(err, io.EOF) {
			return n, h.Sum(nil), nil
		}
		if err != nil {
			return n, nil, err
		}
	}
}

// startMarker writes a set's marker and keeps it fresh until stop.
func (s *Store) startMarker(ctx context.Context, markerKey string) (stop func(), err error) {
	write := func(ctx context.Context) error {
		sk, err := s.b.create(ctx, markerKey)
		if err != nil {
			return err
		}
		if _, err := sk.Write([]byte("set commit under way\n")); err != nil {
			sk.abort()
			return err
		}
		return sk.commit()
	}
	if err := write(ctx); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(setHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := write(ctx); err != nil {
					s.logger.Warn("refresh a set's commit marker", "err", err)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }, nil
}

// removeSet removes a set: its manifest first (from then on the set is
// incomplete), then its members. A marker covers the removal, so a crash
// midway leaves nothing the sweep does not finish.
func (s *Store) removeSet(ctx context.Context, id int64, set Name) error {
	prefixKey, manifestKey, markerKey, err := setKeys(id, set)
	if err != nil {
		return err
	}
	if _, err := s.b.stat(ctx, manifestKey); errors.Is(err, ErrNotExist) {
		// Nothing committed; members of a failed commit may remain.
		if err := s.b.removePrefix(ctx, prefixKey); err != nil {
			return err
		}
		return nil
	}
	stop, err := s.startMarker(ctx, markerKey)
	if err != nil {
		return err
	}
	defer stop()
	if err := s.b.remove(ctx, manifestKey); err != nil {
		return err
	}
	if err := s.b.removePrefix(ctx, prefixKey); err != nil {
		return err
	}
	stop()
	return s.b.remove(ctx, markerKey)
}

// statSet describes a committed set: its size is the sum of its members'.
func (s *Store) statSet(ctx context.Context, id int64, set Name) (Info, error) {
	_, manifestKey, _, err := setKeys(id, set)
	if err != nil {
		return Info{}, err
	}
	_, sum, info, err := s.readManifest(ctx, manifestKey)
	if err != nil {
		return Info{}, err
	}
	return Info{Name: set, Size: sum.Size, ModTime: info.ModTime, ETag: sum.SHA256}, nil
}

// linkSet makes the set to hold what the set from holds, member by member
// without passing through this process (hard links locally, the store's
// own copies on S3), then the same manifest.
func (s *Store) linkSet(ctx context.Context, id int64, from, to Name) (err error) {
	fromPrefix, fromManifest, _, err := setKeys(id, from)
	if err != nil {
		return err
	}
	toPrefix, toManifest, markerKey, err := setKeys(id, to)
	if err != nil {
		return err
	}
	members, _, _, err := s.readManifest(ctx, fromManifest)
	if err != nil {
		return err
	}
	stop, err := s.startMarker(ctx, markerKey)
	if err != nil {
		return err
	}
	defer stop()
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if rerr := s.b.removePrefix(cctx, toPrefix); rerr == nil {
				s.b.remove(cctx, markerKey)
			}
		}
	}()
	if err := s.b.remove(ctx, toManifest); err != nil {
		return err
	}
	if err := s.b.removePrefix(ctx, toPrefix); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.b.parallel())
	for _, m := range members {
		g.Go(func() error { return s.b.copy(gctx, fromPrefix+m.Name, toPrefix+m.Name) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := s.b.copy(ctx, fromManifest, toManifest); err != nil {
		return err
	}
	stop()
	s.b.remove(context.WithoutCancel(ctx), markerKey)
	return nil
}

// Materialize writes the members of a committed set into the local folder
// dst, which it makes (it may exist if empty), for a reader that wants a
// real folder (rsync serving a download). Folders are made 0755 and files
// are 0444: on the local backend they are hard links to the store's own
// files where the file system allows (the store's folder stays closed to
// other users; a materialized file must never be written), else copies
// checked against the manifest's sha256 as they are written. After a
// failure dst may hold part of the set: the caller removes it.
func (s *Store) Materialize(ctx context.Context, id int64, set Name, dst string) error {
	t, err := s.OpenSet(ctx, id, set)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("files: materialize: %w", err)
		}
		entries, err := os.ReadDir(dst)
		if err != nil {
			return fmt.Errorf("files: materialize: %w", err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("files: materialize: %s is not empty", dst)
		}
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("files: materialize: %w", err)
	}
	defer root.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.b.parallel())
	made := map[string]bool{}
	for _, m := range t.members {
		if dir := path.Dir(m.Name); dir != "." && !made[dir] {
			if err := root.MkdirAll(filepath.FromSlash(dir), 0o755); err != nil {
				return fmt.Errorf("files: materialize: %w", err)
			}
			made[dir] = true
		}
		g.Go(func() error {
			k := t.prefix + m.Name
			if ok, err := s.b.linkOut(gctx, k, filepath.Join(dst, filepath.FromSlash(m.Name))); err != nil || ok {
				return err
			}
			o, err := s.b.open(gctx, k)
			if err != nil {
				return fmt.Errorf("files: materialize %s: %w", m.Name, err)
			}
			defer o.Close()
			f, err := root.OpenFile(filepath.FromSlash(m.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
			if err != nil {
				return fmt.Errorf("files: materialize: %w", err)
			}
			n, sum, err := copySmall(f, o)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil && (n != m.Size || hex.EncodeToString(sum) != m.SHA256) {
				err = fmt.Errorf("files: member %s of set %s of request %d does not match its manifest", m.Name, set, id)
			}
			return err
		})
	}
	return g.Wait()
}

// sweepSets finishes the commits and removals of sets that a dead process
// left: a marker older than minAge (and than setStale, as a live commit
// refreshes its own) whose set has a manifest is dropped; one whose set
// has none goes with the set's members.
func (s *Store) sweepSets(ctx context.Context, minAge time.Duration) (int, error) {
	markers, err := s.b.list(ctx, setMarkers)
	if err != nil {
		return 0, err
	}
	age := max(minAge, s.setStale)
	n := 0
	for _, m := range markers {
		if time.Since(m.ModTime) < age {
			continue
		}
		k := strings.TrimPrefix(string(m.Name), setMarkers)
		idPart, base, _ := cut(k)
		id, perr := strconv.ParseInt(idPart, 10, 64)
		prefixKey, manifestKey, markerKey, kerr := setKeys(id, SetName(base))
		if perr != nil || kerr != nil || markerKey != string(m.Name) {
			continue
		}
		if _, err := s.b.stat(ctx, manifestKey); err == nil {
			if err := s.b.remove(ctx, markerKey); err != nil {
				return n, err
			}
			continue
		} else if !errors.Is(err, ErrNotExist) {
			return n, err
		}
		// Still stale? A commit that began meanwhile has made it fresh.
		if st, err := s.b.stat(ctx, markerKey); err != nil || time.Since(st.ModTime) < age {
			continue
		}
		if err := s.b.removePrefix(ctx, prefixKey); err != nil {
			return n, err
		}
		if err := s.b.remove(ctx, markerKey); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
