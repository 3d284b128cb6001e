package engine

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/files"
)

// layers before the terminal one ("pgdmp_custom", "pgdmp_tar",
// "pgdmp_directory", "sql").
func (r *run) outerLayers() []string { return outerLayers(r.info.Compressions) }

func outerLayers(compressions []string) []string {
	var out []string
	for _, l := range compressions {
		if strings.HasPrefix(l, "pgdmp_") || l == "sql" {
			break
		}
		out = append(out, l)
	}
	return out
}

func (r *run) openInner() (io.ReadCloser, error) {
	return openInner(r.src, r.info.Compressions, r.budget)
}

// openInner opens the dump inside its outer layers (gzip, zip, tar) as a
// stream, never decompressed to disk; what the layers expand to counts
// against b. src is read from its start (its own offset is not used).
func openInner(src files.Object, compressions []string, b *budget) (io.ReadCloser, error) {
	size := src.Info().Size
	var rc io.Reader = io.NewSectionReader(src, 0, size)
	var closers []io.Closer
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}
	peeled := false
	for i, l := range outerLayers(compressions) {
		peeled = true
		switch l {
		case "gzip":
			z, err := gzip.NewReader(bufio.NewReaderSize(rc, 1<<20))
			if err != nil {
				closeAll()
				return nil, customer("The gzip layer of the upload is damaged: %v.", err)
			}
			closers = append(closers, z)
			rc = z
		case "zip":
			if i != 0 {
				closeAll()
				return nil, customer("A zip inside another layer is not supported.")
			}
			zr, err := zip.NewReader(src, size)
			if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
				closeAll()
				return nil, customer("The zip file is damaged: %v.", err)
			}
			m := pickZipMember(zr)
			if m == nil {
				closeAll()
				return nil, customer("The zip holds no dump.sql.")
			}
			mr, err := m.Open()
			if err != nil {
				closeAll()
				return nil, customer("The zip member %s is damaged: %v.", m.Name, err)
			}
			closers = append(closers, mr)
			rc = mr
		case "tar":
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err != nil {
					closeAll()
					return nil, customer("The tar file holds no dump: %v.", err)
				}
				if h.Typeflag == tar.TypeReg {
					break
				}
			}
			rc = tr
		}
	}
	if peeled { // what a layer expands to counts
		rc = b.reader(rc)
	}
	return struct {
		io.Reader
		io.Closer
	}{rc, closerFunc(closeAll)}, nil
}

type closerFunc func()

func (c closerFunc) Close() error { c(); return nil }

func pickZipMember(zr *zip.Reader) *zip.File {
	var files []*zip.File
	for _, f := range zr.File {
		if path.Clean(f.Name) == "dump.sql" {
			return f
		}
		if !f.FileInfo().IsDir() {
			files = append(files, f)
		}
	}
	if len(files) == 1 {
		return files[0]
	}
	return nil
}

// restoreArgs: owners, grants, tablespaces and subscriptions of the
// customer's server do not exist here (and a subscription would connect
// out); the first error stops the restore.
var restoreArgs = []string{"--no-owner", "--no-acl", "--no-tablespaces", "--no-subscriptions", "--exit-on-error"}

func (r *run) restore(ctx context.Context) error {
	switch r.info.Format {
	case "custom", "tar":
		return r.pgRestore(ctx)
	case "directory":
		if err := r.extractDirectory(r.work, "restore-dir"); err != nil {
			return err
		}
		return r.runRestoreTool(ctx, nil, "pg_restore", append(restoreArgs, "-Fd", "restore-dir")...)
	case "sql":
		if r.info.Filestore {
			if err := r.extractFilestore(); err != nil {
				return err
			}
		}
		return r.psqlRestore(ctx)
	}
	return customer("The upload's format is not supported for restoring.")
}

func (r *run) pgRestore(ctx context.Context) error {
	if len(r.outerLayers()) == 0 {
		// A local file as standard input: pg_restore can seek in it, and
		// the tools user needs no access to the data directory. An object
		// of object storage streams.
		if f, ok := files.AsFile(r.src); ok {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			return r.runRestoreTool(ctx, f, "pg_restore", restoreArgs...)
		}
		return r.runRestoreTool(ctx, io.NewSectionReader(r.src, 0, r.src.Info().Size), "pg_restore", restoreArgs...)
	}
	in, err := r.openInner()
	if err != nil {
		return err
	}
	defer in.Close()
	return r.runRestoreTool(ctx, in, "pg_restore", restoreArgs...)
}

func (r *run) runRestoreTool(ctx context.Context, stdin io.Reader, name string, args ...string) error {
	if name == "pg_restore" {
		args = append([]string{"-d", r.scratch.name}, args...)
	}
	out, err := r.runTool(ctx, r.tool(ctx, name, args...), stdin)
	if err != nil {
		return r.toolFailed(ctx, name, out, err)
	}
	if out != "" {
		r.log("warning", "%s said: %s", name, r.scrub(out))
	}
	return nil
}

// runTool runs cmd with stdin and returns the tail of its output. When
// reading stdin failed (the upload is damaged, or expands past its
// budget), that is the error, whatever the tool made of the cut input.
func (r *run) runTool(ctx context.Context, cmd *exec.Cmd, stdin io.Reader) (string, error) {
	var src *sourceReader
	if stdin != nil {
		if f, ok := stdin.(*os.File); ok {
			cmd.Stdin = f // passed as is: the tool can seek in it
		} else {
			src = &sourceReader{r: stdin}
			cmd.Stdin = src
		}
	}
	var tail tailBuffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &tail
	err := cmd.Run()
	if src != nil && src.err != nil {
		var ce *CustomerError
		if errors.As(src.err, &ce) {
			return tail.String(), src.err
		}
		return tail.String(), customer("The upload is damaged or truncated: %v.", src.err)
	}
	if err != nil && ctx.Err() != nil {
		return tail.String(), ctx.Err()
	}
	return tail.String(), err
}

// toolFailed turns a tool's failure into the customer's reason (the log
// keeps the whole output).
func (r *run) toolFailed(ctx context.Context, name, out string, err error) error {
	var ce *CustomerError
	if errors.As(err, &ce) || ctx.Err() != nil {
		return err
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("%s: %w", name, err) // it did not run: ours to fix
	}
	r.e.logger.Info("restore failed", "request_id", r.job.ID, "tool", name, "err", err, "output", out)
	return customer("The dump could not be restored (%s): %s", name, orUnknown(r.scrub(firstError(out))))
}

// firstError keeps, of a tool's output, the first error and what follows
// it up to its "Command was:" (the whole statement helps nobody).
func firstError(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "ERROR:") || strings.Contains(l, "error:") {
			end := min(i+4, len(lines))
			for j := i + 1; j < end; j++ {
				if strings.Contains(lines[j], "Command was:") {
					end = j
				}
			}
			return strings.Join(lines[i:end], "\n")
		}
	}
	return out
}

// sourceReader remembers why reading a tool's input failed.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// psqlVars are the variables psql sets that a dump could read back with
// :'NAME' (the server's socket path among them); they are unset before
// the dump's text is read.
var psqlVars = []string{"DBNAME", "HOST", "PORT", "USER", "ENCODING", "SERVER_VERSION_NAME", "SERVER_VERSION_NUM",
	"VERSION", "VERSION_NAME", "VERSION_NUM"}

var psqlLineRE = regexp.MustCompile(`psql:<stdin>:(\d+): `)

// psqlRestore runs a plain SQL dump with psql in restricted mode: \restrict
// with a key the dump cannot know comes first, so psql refuses every
// meta-command (\!, \o |cmd, \copy, \i, \c, …) the dump holds; the dump's
// own \restrict lines are dropped. COPY data passes untouched.
func (r *run) psqlRestore(ctx context.Context) error {
	in, err := r.openInner()
	if err != nil {
		return err
	}
	defer in.Close()
	var pre strings.Builder
	for _, v := range psqlVars {
		pre.WriteString(`\unset ` + v + "\n")
	}
	pre.WriteString(`\restrict ` + randomHex(16) + "\n")
	preLines := strings.Count(pre.String(), "\n")
	filter := newSQLFilter(in)
	cmd := r.tool(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-")
	out, err := r.runTool(ctx, cmd, io.MultiReader(strings.NewReader(pre.String()), filter))
	// Line numbers of the dump, not of what psql read.
	out = psqlLineRE.ReplaceAllStringFunc(out, func(m string) string {
		n, _ := strconv.Atoi(psqlLineRE.FindStringSubmatch(m)[1])
		return fmt.Sprintf("line %d: ", n-preLines)
	})
	if err == nil {
		if out != "" {
			r.log("warning", "psql said: %s", r.scrub(out))
		}
		return nil
	}
	if m := metaRefusedRE.FindStringSubmatch(out); m != nil {
		r.e.logger.Info("restore refused a psql command", "request_id", r.job.ID, "output", out)
		line, _ := strconv.Atoi(m[1])
		what := ""
		if cmdText, ok := filter.metaLines[line]; ok {
			what = fmt.Sprintf(" (%q)", cmdText)
		}
		return customer("The dump holds a psql command on line %d%s: a dump may hold SQL only, and psql commands can run programs or read files on the server, so nothing was restored.", line, what)
	}
	return r.toolFailed(ctx, "psql", out, err)
}

var metaRefusedRE = regexp.MustCompile(`line (\d+): error: backslash commands are restricted`)

// extractDirectory extracts a directory archive's toc.dat and the data
// files it names (inspection checked them: plain files of the archive with
// pg_dump's names) into dst in w; nothing else of the archive is written.
func (r *run) extractDirectory(w *workDir, dst string) error {
	if r.set != nil {
		return r.copySetFiles(w, dst)
	}
	if r.info.DirTOC == "" || len(r.outerLayers()) == 0 {
		return customer("The directory archive has no toc.dat.")
	}
	dir := path.Dir(r.info.DirTOC)
	want := map[string]string{r.info.DirTOC: "toc.dat"}
	for _, f := range r.info.DirFiles {
		want[path.Join(dir, f)] = f
	}
	if err := w.mkdirAll(dst); err != nil {
		return err
	}
	put := func(member string, src io.Reader) error {
		name, ok := want[member]
		if !ok {
			return nil
		}
		delete(want, member)
		if _, err := w.writeFile(path.Join(dst, name), r.budget.reader(src)); err != nil {
			var ce *CustomerError
			if errors.As(err, &ce) {
				return err
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return customer("The upload is truncated (%s).", name)
			}
			return err
		}
		return nil
	}
	switch r.outerLayers()[len(r.outerLayers())-1] {
	case "zip":
		zr, err := zip.NewReader(r.src, r.src.Info().Size)
		if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
			return customer("The zip file is damaged: %v.", err)
		}
		for _, f := range zr.File {
			if f.FileInfo().IsDir() || !f.Mode().IsRegular() {
				continue
			}
			name, err := dump.CheckMemberName(f.Name)
			if err != nil {
				return customer("%s.", upperFirst(err.Error()))
			}
			if _, ok := want[name]; !ok {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return customer("The zip member %s is damaged: %v.", name, err)
			}
			err = put(name, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
	default:
		var src io.Reader = io.NewSectionReader(r.src, 0, r.src.Info().Size)
		if r.outerLayers()[0] == "gzip" {
			z, err := gzip.NewReader(bufio.NewReaderSize(src, 1<<20))
			if err != nil {
				return customer("The gzip layer is damaged: %v.", err)
			}
			defer z.Close()
			src = z
		}
		tr := tar.NewReader(src)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return customer("The tar file is damaged: %v.", err)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			name, err := dump.CheckMemberName(h.Name)
			if err != nil {
				return customer("%s.", upperFirst(err.Error()))
			}
			if err := put(name, tr); err != nil {
				return err
			}
		}
	}
	for member := range want {
		return customer("The directory archive lacks %s.", member)
	}
	return nil
}

// copySetFiles copies an upload set's toc.dat and the data files it names
// (inspection checked them: plain members with pg_dump's names) into dst
// in w, for the tools user; nothing else of the set is read, and the
// tools never reach the store. What is copied counts against the budget.
func (r *run) copySetFiles(w *workDir, dst string) error {
	if err := w.mkdirAll(dst); err != nil {
		return err
	}
	for _, name := range append([]string{"toc.dat"}, r.info.DirFiles...) {
		o, err := r.set.OpenMember(name)
		if errors.Is(err, files.ErrNotExist) {
			return customer("The upload lacks %s.", name)
		}
		if err != nil {
			return fmt.Errorf("open %s of the upload: %w", name, err)
		}
		_, err = w.writeFile(path.Join(dst, name), r.budget.reader(o))
		o.Close()
		if err != nil {
			var ce *CustomerError
			if errors.As(err, &ce) {
				return err
			}
			return fmt.Errorf("copy %s of the upload: %w", name, err)
		}
	}
	return nil
}

// extractFilestore extracts filestore/ of an Odoo backup into the work
// folder (names checked; nothing outside it is written).
func (r *run) extractFilestore() error {
	zr, err := zip.NewReader(r.src, r.src.Info().Size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return customer("The zip file is damaged: %v.", err)
	}
	n := 0
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		name, err := dump.CheckMemberName(f.Name)
		if err != nil {
			return customer("%s.", upperFirst(err.Error()))
		}
		rel, ok := strings.CutPrefix(name, "filestore/")
		if !ok || rel == "" {
			continue
		}
		if !f.Mode().IsRegular() {
			return customer("The filestore member %s is not a plain file.", name)
		}
		rc, err := f.Open()
		if err != nil {
			return customer("The zip member %s is damaged: %v.", name, err)
		}
		_, err = r.work.writeFile(path.Join("filestore", rel), r.budget.reader(rc))
		rc.Close()
		if err != nil {
			var ce *CustomerError
			if errors.As(err, &ce) {
				return err
			}
			if errors.Is(err, os.ErrExist) {
				return customer("The filestore holds %s twice.", name)
			}
			return err
		}
		n++
	}
	r.log("info", "Filestore: %d files.", n)
	return nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// sqlFilter drops what a plain dump carries that cannot run here: owners
// and grants (roles of another server), settings of newer servers, and
// psql's \restrict lines (psql gets its own). COPY data passes untouched.
// A dropped line becomes an empty one, so psql's line numbers stay the
// dump's. Lines that start with a backslash are remembered for messages.
type sqlFilter struct {
	br        *bufio.Reader
	buf       bytes.Buffer
	inCopy    bool
	err       error
	line      int
	metaLines map[int]string
}

func newSQLFilter(r io.Reader) *sqlFilter {
	return &sqlFilter{br: bufio.NewReaderSize(r, 1<<20), metaLines: map[int]string{}}
}

func (f *sqlFilter) Read(p []byte) (int, error) {
	for f.buf.Len() == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.br.ReadBytes('\n')
		f.err = err
		if len(line) == 0 {
			continue
		}
		f.line++
		if f.inCopy {
			if bytes.Equal(bytes.TrimRight(line, "\r\n"), []byte(`\.`)) {
				f.inCopy = false
			}
			f.buf.Write(line)
			continue
		}
		if bytes.HasPrefix(line, []byte("COPY ")) && bytes.Contains(line, []byte("FROM stdin")) {
			f.inCopy = true
		}
		if trimmed := bytes.TrimLeft(line, " \t"); bytes.HasPrefix(trimmed, []byte(`\`)) && len(f.metaLines) < 1000 {
			s := strings.TrimRight(string(trimmed), "\r\n")
			if len(s) > 60 {
				s = s[:60] + "…"
			}
			f.metaLines[f.line] = s
		}
		if dropLine(line) {
			f.buf.WriteByte('\n')
			continue
		}
		f.buf.Write(line)
	}
	return f.buf.Read(p)
}

func dropLine(line []byte) bool {
	s := string(bytes.TrimSpace(line))
	switch {
	case strings.HasPrefix(s, "SET transaction_timeout"),
		strings.HasPrefix(s, `\restrict `), strings.HasPrefix(s, `\unrestrict `),
		strings.HasPrefix(s, "GRANT "), strings.HasPrefix(s, "REVOKE "):
		return true
	case strings.HasPrefix(s, "ALTER ") && strings.Contains(s, " OWNER TO ") && strings.HasSuffix(s, ";"):
		return true
	}
	return false
}
