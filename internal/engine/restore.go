package engine

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
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

func (r *run) openInner() (io.ReadCloser, error) { return openInner(r.upload, r.info.Compressions) }

// openInner opens the dump inside its outer layers (gzip, zip, tar) as a
// stream, never decompressed to disk.
func openInner(p string, compressions []string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser = f
	closers := []io.Closer{f}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}
	for i, l := range outerLayers(compressions) {
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
			st, _ := f.Stat()
			zr, err := zip.NewReader(f, st.Size())
			if err != nil {
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
				return nil, err
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
			rc = io.NopCloser(tr)
		}
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
		if f.Name == "dump.sql" {
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

func (r *run) restore(ctx context.Context) error {
	switch r.info.Format {
	case "custom", "tar":
		return r.pgRestore(ctx)
	case "directory":
		dir, err := r.extractDirectory()
		if err != nil {
			return err
		}
		return r.runRestoreTool(ctx, nil, "pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "-Fd", dir)
	case "sql":
		if r.info.Filestore {
			if err := r.extractFilestore(); err != nil {
				return err
			}
		}
		in, err := r.openInner()
		if err != nil {
			return err
		}
		defer in.Close()
		return r.runRestoreTool(ctx, newSQLFilter(in), "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction")
	}
	return customer("The upload's format is not supported for restoring.")
}

func (r *run) pgRestore(ctx context.Context) error {
	args := []string{"--no-owner", "--no-acl", "--exit-on-error"}
	if len(r.outerLayers()) == 0 {
		return r.runRestoreTool(ctx, nil, "pg_restore", append(args, r.upload)...)
	}
	in, err := r.openInner()
	if err != nil {
		return err
	}
	defer in.Close()
	return r.runRestoreTool(ctx, in, "pg_restore", args...)
}

func (r *run) runRestoreTool(ctx context.Context, stdin io.Reader, name string, args ...string) error {
	if name == "pg_restore" {
		args = append([]string{"-d", r.scratch}, args...)
	}
	cmd := r.tool(ctx, r.scratch, name, args...)
	cmd.Stdin = stdin
	var tail tailBuffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &tail
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return customer("The dump could not be restored (%s): %s", name, orUnknown(tail.String()))
	}
	if s := tail.String(); s != "" {
		r.log("warning", "%s said: %s", name, s)
	}
	return nil
}

// extractDirectory unpacks a zipped or tarred directory archive.
func (r *run) extractDirectory() (string, error) {
	dst := filepath.Join(r.work, "restore-dir")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return "", err
	}
	keep := func(name string) (string, bool) {
		base := path.Base(name)
		if base == "toc.dat" || base == "blobs.toc" || isDataFile(base) {
			return filepath.Join(dst, base), true
		}
		return "", false
	}
	switch r.outerLayers()[len(r.outerLayers())-1] {
	case "zip":
		zr, err := zip.OpenReader(r.upload)
		if err != nil {
			return "", customer("The zip file is damaged: %v.", err)
		}
		defer zr.Close()
		for _, f := range zr.File {
			out, ok := keep(f.Name)
			if !ok || f.FileInfo().IsDir() {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return "", err
			}
			err = writeFile(out, rc)
			rc.Close()
			if err != nil {
				return "", err
			}
		}
	default:
		in, err := os.Open(r.upload)
		if err != nil {
			return "", err
		}
		defer in.Close()
		var src io.Reader = in
		if r.outerLayers()[0] == "gzip" {
			z, err := gzip.NewReader(in)
			if err != nil {
				return "", customer("The gzip layer is damaged: %v.", err)
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
				return "", customer("The tar file is damaged: %v.", err)
			}
			if out, ok := keep(h.Name); ok && h.Typeflag == tar.TypeReg {
				if err := writeFile(out, tr); err != nil {
					return "", err
				}
			}
		}
	}
	return dst, nil
}

// isDataFile tells a directory archive's data files (NNNN.dat[.gz|.lz4|.zst], blob_*).
func isDataFile(base string) bool {
	i := strings.Index(base, ".dat")
	if i <= 0 {
		return strings.HasPrefix(base, "blob_")
	}
	for _, c := range base[:i] {
		if c < '0' || c > '9' {
			return strings.HasPrefix(base, "blob_")
		}
	}
	return true
}

func writeFile(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return customer("The upload is truncated.")
		}
		return err
	}
	return f.Close()
}

// extractFilestore unpacks filestore/ of an Odoo backup.
func (r *run) extractFilestore() error {
	zr, err := zip.OpenReader(r.upload)
	if err != nil {
		return customer("The zip file is damaged: %v.", err)
	}
	defer zr.Close()
	root := filepath.Join(r.work, "filestore")
	n := 0
	for _, f := range zr.File {
		rel, ok := strings.CutPrefix(f.Name, "filestore/")
		if !ok || f.FileInfo().IsDir() || rel == "" {
			continue
		}
		clean := path.Clean("/" + rel)[1:]
		if clean == "" || strings.HasPrefix(clean, "..") {
			continue
		}
		out := filepath.Join(root, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
			return err
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		err = writeFile(out, rc)
		rc.Close()
		if err != nil {
			return err
		}
		n++
	}
	r.log("info", "Filestore: %d files.", n)
	return nil
}

// sqlFilter drops what a plain dump carries that cannot run here: owners
// and grants (roles of another server), settings of newer servers, and
// psql's \restrict lines for older psql; COPY data passes untouched.
type sqlFilter struct {
	br     *bufio.Reader
	buf    bytes.Buffer
	inCopy bool
	err    error
}

func newSQLFilter(r io.Reader) io.Reader { return &sqlFilter{br: bufio.NewReaderSize(r, 1<<20)} }

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
		if dropLine(line) {
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
		strings.HasPrefix(s, `\restrict`), strings.HasPrefix(s, `\unrestrict`),
		strings.HasPrefix(s, "GRANT "), strings.HasPrefix(s, "REVOKE "):
		return true
	case strings.HasPrefix(s, "ALTER ") && strings.Contains(s, " OWNER TO ") && strings.HasSuffix(s, ";"):
		return true
	}
	return false
}
