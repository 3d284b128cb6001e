package dump

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// InspectFile inspects the dump stored at p, within the zip limits every
// dump is held to (see InspectLimited).
func InspectFile(p string) (Info, error) { return InspectFileLimited(p, Limits{}) }

// InspectFileLimited inspects the dump stored at p within limits.
func InspectFileLimited(p string, lim Limits) (Info, error) {
	f, err := os.Open(p)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	return InspectLimited(f, st.Size(), lim)
}

// Inspect is InspectLimited with the zero Limits.
func Inspect(ra io.ReaderAt, size int64) (Info, error) { return InspectLimited(ra, size, Limits{}) }

// InspectLimited reads an uploaded dump of size bytes. It fails with a
// *FormatError (see IsFormatError) when the input is not a usable Odoo
// database dump, saying why in words a customer can act on: also when an
// archive member reaches outside the archive (an absolute name, "..", a
// link, a device) or names a data file pg_dump would not write, and when
// the dump expands past lim (the error then matches ErrTooLarge).
func InspectLimited(ra io.ReaderAt, size int64, lim Limits) (info Info, err error) {
	defer func() {
		if err != nil && !IsFormatError(err) && isDamage(err) {
			err = formatErr("the dump is truncated or damaged (%v); upload it again", err)
		}
	}()
	if size == 0 {
		return Info{}, formatErr("the upload is empty")
	}
	t := &tables{budget: newBudget(lim)}
	head := make([]byte, 512)
	n, _ := ra.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")):
		err = inspectZip(ra, size, &info, t)
	case bytes.HasPrefix(head, []byte("PGDMP")):
		err = inspectArchiveFile(ra, size, &info, t)
	case isTar(head):
		err = inspectTar(func() (io.Reader, func(), error) {
			return io.NewSectionReader(ra, 0, size), func() {}, nil
		}, &info, t)
	default:
		open := func() (io.Reader, func(), error) { return io.NewSectionReader(ra, 0, size), func() {}, nil }
		err = inspectStream(open, &info, t, 0)
	}
	if err != nil {
		return info, err
	}
	return finish(info, t)
}

// finish fills the Odoo facts from the rows read; a dump without them is
// not an Odoo database.
func finish(info Info, t *tables) (Info, error) {
	t.finish(&info)
	if info.DatabaseVersion == "" {
		return info, formatErr("this dump holds no Odoo database: ir_module_module has no base module (is it the right database?)")
	}
	return info, nil
}

// InspectFS reads a directory-format dump given as a folder of files,
// toc.dat at its top (a folder uploaded as such, over rsync say), with the
// same parser, checks and limits as a zipped or tarred directory archive
// (see InspectLimited): only toc.dat and the data files it (and blobs.toc)
// names are read, each of pg_dump's names and a plain file at the top of
// fsys. Other files and subfolders are ignored; a member of the top that is
// a link, a device or a pipe, or whose name is malformed, is refused.
// Format is "directory", Compressions ["pgdmp_directory","sql"] (no layer
// around the dump), DirTOC "toc.dat" and DirFiles the data files.
func InspectFS(fsys fs.FS, lim Limits) (info Info, err error) {
	defer func() {
		if err != nil && !IsFormatError(err) && isDamage(err) {
			err = formatErr("the dump is truncated or damaged (%v); upload it again", err)
		}
	}()
	t := &tables{budget: newBudget(lim)}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return Info{}, fmt.Errorf("dump: read the folder: %w", err)
	}
	files := map[string]bool{}
	for _, e := range entries {
		if _, err := CheckMemberName(e.Name()); err != nil {
			return Info{}, err
		}
		if e.IsDir() {
			continue
		}
		if err := checkMemberMode(e.Name(), e.Type()); err != nil {
			return Info{}, err
		}
		files[e.Name()] = true
	}
	if !files["toc.dat"] {
		if len(files) == 0 && len(entries) == 0 {
			return Info{}, formatErr("the upload is empty")
		}
		return Info{}, formatErr("the folder holds no toc.dat: upload the folder pg_dump --format=directory wrote")
	}
	open := func(name string) opener {
		return func() (io.Reader, func(), error) {
			f, err := fsys.Open(name)
			if err != nil {
				return nil, nil, fmt.Errorf("dump: open %s: %w", name, err)
			}
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("dump: open %s: %w", name, err)
			}
			if err := checkMemberMode(name, st.Mode()); err != nil {
				f.Close()
				return nil, nil, err
			}
			return f, func() { f.Close() }, nil
		}
	}
	info.DirTOC = "toc.dat"
	toc := open("toc.dat")
	err = inspectDirectory(func() (io.Reader, func(), error) {
		r, closeFn, err := toc()
		if err != nil {
			return nil, nil, err
		}
		return t.budget.expand(r), closeFn, nil
	}, func(name string) opener {
		if files[name] {
			return open(name)
		}
		return nil
	}, &info, t)
	if err != nil {
		return info, err
	}
	return finish(info, t)
}

func isDamage(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) ||
		errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrChecksum) || errors.Is(err, tar.ErrHeader) ||
		strings.Contains(err.Error(), "flate") || strings.Contains(err.Error(), "zlib") ||
		strings.Contains(err.Error(), "lz4") || strings.Contains(err.Error(), "zstd")
}

func isTar(head []byte) bool { return len(head) >= 262 && string(head[257:262]) == "ustar" }

// opener reopens a layer's stream from its start (for a second pass).
type opener func() (io.Reader, func(), error)

const maxDepth = 4

// inspectStream identifies a layer read as a stream and descends into it.
func inspectStream(open opener, info *Info, t *tables, depth int) error {
	if depth > maxDepth {
		return formatErr("too many nested layers (%s)", strings.Join(info.Compressions, " in "))
	}
	r, closeFn, err := open()
	if err != nil {
		return err
	}
	defer closeFn()
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(512)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		info.Compressions = append(info.Compressions, "gzip")
		return inspectStream(func() (io.Reader, func(), error) {
			r, closeFn, err := open()
			if err != nil {
				return nil, nil, err
			}
			br := bufio.NewReaderSize(r, 1<<20)
			z, err := gzip.NewReader(br)
			if err != nil {
				closeFn()
				return nil, nil, formatErr("the gzip layer is damaged (%v)", err)
			}
			return t.budget.expand(z), func() { z.Close(); closeFn() }, nil
		}, info, t, depth+1)
	case bytes.HasPrefix(head, []byte("PGDMP")):
		info.Compressions = append(info.Compressions, "pgdmp_custom", "sql")
		info.Format = "custom"
		s := newStreamSrc(br)
		return readCustom(s, info, t)
	case isTar(head):
		return inspectTar(open, info, t)
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return formatErr("a zip inside %s cannot be read as a stream; upload the zip itself", strings.Join(info.Compressions, " in "))
	case looksLikeSQL(head):
		info.Compressions = append(info.Compressions, "sql")
		info.Format = "sql"
		return inspectSQL(br, info, t)
	}
	return unknownFormat(head)
}

var otherMagics = []struct {
	magic []byte
	name  string
}{
	{[]byte("BZh"), "bzip2"}, {[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, "xz"}, {[]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},
	{[]byte{0x04, 0x22, 0x4d, 0x18}, "lz4"}, {[]byte{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c}, "7z"}, {[]byte("Rar!\x1a\x07"), "rar"},
}

func unknownFormat(head []byte) error {
	for _, m := range otherMagics {
		if bytes.HasPrefix(head, m.magic) {
			return formatErr("the dump is compressed with %s, which is not supported; upload it uncompressed, gzipped or zipped", m.name)
		}
	}
	if len(head) == 0 {
		return formatErr("the upload is empty")
	}
	return formatErr("this is not a database dump: expected a pg_dump archive (custom, tar or directory), plain SQL, or an Odoo backup zip")
}

// inspectArchiveFile reads a custom archive stored in a file: it can seek
// to data blocks whose offsets the TOC records, and skip the others.
func inspectArchiveFile(ra io.ReaderAt, size int64, info *Info, t *tables) error {
	info.Compressions = append(info.Compressions, "pgdmp_custom", "sql")
	info.Format = "custom"
	return readCustom(newFileSrc(ra, size, 0), info, t)
}

func readCustom(s *src, info *Info, t *tables) error {
	a, err := readHeader(s)
	if err != nil {
		return err
	}
	if a.format != fmtCustom {
		return formatErr("this is the toc.dat of a directory or tar archive; upload the whole folder as a zip or tar")
	}
	if err := readTOC(s, a); err != nil {
		return err
	}
	a.fill(info)
	return readCustomData(s, a, t)
}

// inspectZip reads an Odoo backup (dump.sql, manifest.json, filestore/),
// a zipped directory archive (toc.dat and its data files), or a zip of one
// dump file.
func inspectZip(ra io.ReaderAt, size int64, info *Info, t *tables) error {
	if err := checkZipDirectory(ra, size); err != nil {
		return err
	}
	zr, err := zip.NewReader(ra, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return formatErr("the zip file is damaged (%v)", err)
	}
	info.Compressions = append(info.Compressions, "zip")
	var dumpSQL, toc, manifest *zip.File
	var tocName string
	var files []*zip.File
	byName := map[string]*zip.File{}
	var declared uint64
	for _, f := range zr.File {
		name, err := CheckMemberName(f.Name)
		if err != nil {
			return err
		}
		if err := checkMemberMode(f.Name, f.Mode()); err != nil {
			return err
		}
		if f.FileInfo().IsDir() {
			continue
		}
		declared += f.UncompressedSize64
		if _, dup := byName[name]; dup {
			return formatErr("the zip holds %s twice", quoteName(name))
		}
		byName[name] = f
		files = append(files, f)
		switch {
		case name == "dump.sql":
			dumpSQL = f
		case name == "manifest.json":
			manifest = f
		case path.Base(name) == "toc.dat":
			if toc != nil {
				return formatErr("the zip holds two toc.dat (%s and %s); upload one directory archive", quoteName(tocName), quoteName(name))
			}
			toc, tocName = f, name
		case strings.HasPrefix(name, "filestore/"):
			info.Filestore = true
		}
	}
	if err := checkZipSizes(declared, size, t.budget); err != nil {
		return err
	}
	if manifest != nil && manifest.UncompressedSize64 < 1<<20 {
		readManifest(manifest, info)
	}
	openMember := func(f *zip.File) opener {
		return func() (io.Reader, func(), error) {
			rc, err := f.Open()
			if err != nil {
				return nil, nil, formatErr("the zip member %s is damaged (%v)", quoteName(f.Name), err)
			}
			return rc, func() { rc.Close() }, nil
		}
	}
	switch {
	case dumpSQL != nil:
		err = inspectStream(openMember(dumpSQL), info, t, 1)
		if err == nil && info.PostgreSQL == "" && info.ManifestPG != "" {
			info.PostgreSQL = info.ManifestPG
		}
		return err
	case toc != nil:
		dir := path.Dir(tocName)
		member := func(name string) opener {
			if f, ok := byName[path.Join(dir, name)]; ok {
				return openMember(f)
			}
			return nil
		}
		info.DirTOC = tocName
		return inspectDirectory(openMember(toc), member, info, t)
	case len(files) == 1:
		return inspectStream(openMember(files[0]), info, t, 1)
	}
	if info.Filestore {
		return formatErr("the zip has a filestore but no dump.sql; an Odoo backup holds dump.sql, manifest.json and filestore/")
	}
	return formatErr("the zip holds no dump.sql, no toc.dat and not a single dump file")
}

func readManifest(f *zip.File, info *Info) {
	rc, err := f.Open()
	if err != nil {
		return
	}
	defer rc.Close()
	var m struct {
		Version   string `json:"version"`
		PGVersion string `json:"pg_version"`
	}
	if json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&m) == nil {
		info.ManifestVersion = m.Version
		info.ManifestPG = majorOf(m.PGVersion)
	}
}

// inspectDirectory reads a directory archive: toc.dat, then the data files
// of the wanted entries, found by member().
func inspectDirectory(toc opener, member func(name string) opener, info *Info, t *tables) error {
	info.Compressions = append(info.Compressions, "pgdmp_directory", "sql")
	info.Format = "directory"
	r, closeFn, err := toc()
	if err != nil {
		return err
	}
	defer closeFn()
	s := newStreamSrc(r)
	a, err := readHeader(s)
	if err != nil {
		return err
	}
	if a.format != fmtTar {
		return formatErr("toc.dat is not the table of contents of a directory archive")
	}
	if err := readTOC(s, a); err != nil {
		return err
	}
	a.fill(info)
	if info.DirFiles, err = dirFiles(a, member); err != nil {
		return err
	}
	want, cols := a.wanted(t)
	for _, e := range want {
		name := e.filename
		if name == "" {
			continue
		}
		var open opener
		suffix := ""
		for _, sfx := range []string{"", ".gz", ".lz4", ".zst"} {
			if open = member(name + sfx); open != nil {
				suffix = sfx
				break
			}
		}
		if open == nil {
			return formatErr("the directory archive lacks %s (the data of %s)", name, e.tag)
		}
		if err := readDataFile(open, suffix, e, cols, t); err != nil {
			return err
		}
	}
	return nil
}

func readDataFile(open opener, suffix string, e tocEntry, cols map[string][]string, t *tables) error {
	r, closeFn, err := open()
	if err != nil {
		return err
	}
	defer closeFn()
	r = t.budget.expand(r)
	switch suffix {
	case ".gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return formatErr("%s.gz is damaged (%v)", e.filename, err)
		}
		defer z.Close()
		r = z
	case ".lz4":
		r = lz4.NewReader(r)
	case ".zst":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return err
		}
		defer d.Close()
		r = d
	}
	if err := readTableData(r, e, cols, t); err != nil {
		return fmt.Errorf("table %s: %w", e.tag, err)
	}
	return nil
}

// inspectTar reads pg_dump's tar format (toc.dat first, then NNNN.dat), a
// tar of a directory archive, or a tar of one dump file. Data members that
// come before toc.dat need a second pass over the stream.
func inspectTar(open opener, info *Info, t *tables) error {
	r, closeFn, err := open()
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	var names []string
	have := map[string]bool{}
	var tocName string
	first := true
	pgTar := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			closeFn()
			return formatErr("the tar file is damaged (%v)", err)
		}
		name, regular, err := checkTarHeader(h)
		if err != nil {
			closeFn()
			return err
		}
		if !regular {
			continue
		}
		if have[name] {
			closeFn()
			return formatErr("the tar file holds %s twice", quoteName(name))
		}
		have[name] = true
		names = append(names, name)
		if path.Base(name) == "toc.dat" {
			if tocName != "" {
				closeFn()
				return formatErr("the tar file holds two toc.dat (%s and %s); upload one directory archive", quoteName(tocName), quoteName(name))
			}
			tocName = name
			// pg_dump's own tar format starts with the member "toc.dat"
			// (a tar of a directory archive made at its root names it
			// "./toc.dat").
			pgTar = first && h.Name == "toc.dat"
		}
		first = false
	}
	closeFn()
	if tocName == "" {
		if len(names) == 1 {
			info.Compressions = append(info.Compressions, "tar")
			return inspectStream(tarMember(open, names[0]), info, t, len(info.Compressions))
		}
		return formatErr("the tar file holds no toc.dat and not a single dump file")
	}
	if pgTar {
		info.Compressions = append(info.Compressions, "pgdmp_tar")
		err := inspectDirectory(tarMember(open, tocName), func(name string) opener {
			if have[name] {
				return tarMember(open, name)
			}
			return nil
		}, info, t)
		// inspectDirectory names the layers as a directory; pg_dump's tar
		// format is one layer.
		info.Compressions = fixTarLayers(info.Compressions)
		info.Format = "tar"
		info.DirFiles = nil
		return err
	}
	info.Compressions = append(info.Compressions, "tar")
	dir := path.Dir(tocName)
	info.DirTOC = tocName
	return inspectDirectory(tarMember(open, tocName), func(name string) opener {
		if p := path.Join(dir, name); have[p] {
			return tarMember(open, p)
		}
		return nil
	}, info, t)
}

func fixTarLayers(c []string) []string {
	out := c[:0:0]
	for _, l := range c {
		if l != "pgdmp_directory" {
			out = append(out, l)
		}
	}
	return out
}

// tarMember opens one member of a tar stream by reading up to it.
func tarMember(open opener, name string) opener {
	return func() (io.Reader, func(), error) {
		r, closeFn, err := open()
		if err != nil {
			return nil, nil, err
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err != nil {
				closeFn()
				if errors.Is(err, io.EOF) {
					return nil, nil, formatErr("the tar file lacks %s", name)
				}
				return nil, nil, formatErr("the tar file is damaged (%v)", err)
			}
			if clean, regular, err := checkTarHeader(h); err == nil && regular && clean == name {
				return tr, closeFn, nil
			}
		}
	}
}
