package dump

import (
	"archive/tar"
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"unicode"
)

// Limits bound what a dump may make inspection (and, through Info, a
// restore) read. The zero value bounds only what every dump is held to:
// zip directories of at most MaxZipEntries entries and MaxZipDirectory
// bytes.
type Limits struct {
	// MaxExpanded caps the bytes a dump may expand to: each decompressed
	// layer and data file read during inspection, and the sizes a zip
	// declares for its members all together. 0 means no cap.
	MaxExpanded int64
}

const (
	// MaxZipEntries is the most members a zip may hold (an Odoo backup's
	// filestore rarely has a tenth of it). Reading a zip's directory takes
	// memory in proportion, so a larger one is refused before it is read.
	MaxZipEntries = 2_000_000
	// MaxZipDirectory caps the size of a zip's central directory.
	MaxZipDirectory = 512 << 20
	// maxRatio: deflate cannot expand past about 1032:1, so a zip whose
	// members declare more than this in all is refused.
	maxRatio = 1100
	// maxBlobsTOC caps a blobs.toc file (one short line per large object).
	maxBlobsTOC = 256 << 20
)

// budget counts expanded bytes against Limits.MaxExpanded.
type budget struct {
	left  int64 // < 0: no limit
	limit int64
}

func newBudget(l Limits) *budget {
	if l.MaxExpanded <= 0 {
		return &budget{left: -1}
	}
	return &budget{left: l.MaxExpanded, limit: l.MaxExpanded}
}

// ErrTooLarge is wrapped by the FormatError of a dump that expands past
// Limits.MaxExpanded.
var ErrTooLarge = errors.New("dump expands past the limit")

func (b *budget) exceeded() error {
	return &FormatError{Reason: fmt.Sprintf("the dump expands past %s, the limit this server allows (a compression bomb, or a database too large for it)",
		HumanBytes(b.limit)), err: ErrTooLarge}
}

// expand counts the bytes read through r.
func (b *budget) expand(r io.Reader) io.Reader {
	if b == nil || b.left < 0 {
		return r
	}
	return &budgetReader{r: r, b: b}
}

type budgetReader struct {
	r io.Reader
	b *budget
}

func (br *budgetReader) Read(p []byte) (int, error) {
	if br.b.left <= 0 {
		// One byte more tells a stream that ends exactly at the limit
		// from one that goes on.
		var one [1]byte
		if n, _ := br.r.Read(one[:]); n > 0 {
			return 0, br.b.exceeded()
		}
		return br.r.Read(p)
	}
	if int64(len(p)) > br.b.left {
		p = p[:br.b.left]
	}
	n, err := br.r.Read(p)
	br.b.left -= int64(n)
	return n, err
}

// HumanBytes formats a byte count for messages: "200 GiB", "1.5 MiB".
func HumanBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	s := strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", f), "0"), ".")
	return s + " " + units[i]
}

// CheckMemberName checks the name of a member of an uploaded archive (zip,
// tar, or a file of an uploaded folder) and returns it cleaned ("./a" is
// "a"). An absolute name, a ".." component, a backslash or a control
// character is refused: such a name would reach outside the archive.
func CheckMemberName(name string) (string, error) {
	switch {
	case name == "":
		return "", formatErr("the archive holds a member without a name")
	case strings.HasPrefix(name, "/"):
		return "", formatErr("the archive member %s has an absolute path; archives may only hold relative names", quoteName(name))
	case strings.ContainsRune(name, '\\'):
		return "", formatErr("the archive member %s has a backslash in its name; archives may only hold plain relative names", quoteName(name))
	}
	for _, c := range name {
		if unicode.IsControl(c) || (unicode.Is(unicode.Cf, c) && c != '\u200d') {
			return "", formatErr("the archive member %s has a control character in its name", quoteName(name))
		}
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", formatErr("the archive member %s reaches outside the archive (..); archives may only hold names inside themselves", quoteName(name))
		}
	}
	return path.Clean(name), nil
}

// checkMemberMode refuses members that are not plain files or folders:
// symbolic links, hard links, devices, pipes, sockets.
func checkMemberMode(name string, mode fs.FileMode) error {
	switch {
	case mode&fs.ModeSymlink != 0:
		return formatErr("the archive member %s is a symbolic link; archives may only hold plain files and folders", quoteName(name))
	case mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return formatErr("the archive member %s is a device file; archives may only hold plain files and folders", quoteName(name))
	case mode&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0:
		return formatErr("the archive member %s is not a plain file; archives may only hold plain files and folders", quoteName(name))
	}
	return nil
}

// checkTarHeader checks a tar member's name and type; it returns the
// cleaned name, and whether the member is a regular file.
func checkTarHeader(h *tar.Header) (string, bool, error) {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return "", false, nil
	}
	name, err := CheckMemberName(h.Name)
	if err != nil {
		return "", false, err
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still write TypeRegA
		return name, true, nil
	case tar.TypeDir:
		return name, false, nil
	case tar.TypeLink:
		return "", false, formatErr("the archive member %s is a hard link; archives may only hold plain files and folders", quoteName(h.Name))
	case tar.TypeSymlink:
		return "", false, formatErr("the archive member %s is a symbolic link; archives may only hold plain files and folders", quoteName(h.Name))
	case tar.TypeChar, tar.TypeBlock:
		return "", false, formatErr("the archive member %s is a device file; archives may only hold plain files and folders", quoteName(h.Name))
	}
	return "", false, formatErr("the archive member %s is not a plain file (tar type %q); archives may only hold plain files and folders", quoteName(h.Name), h.Typeflag)
}

// quoteName quotes a name from an upload for a message, shortened.
func quoteName(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)
}

var (
	// dataFileRE: what toc.dat may name for table data ("3001.dat"; the
	// file itself may carry .gz, .lz4 or .zst).
	dataFileRE = regexp.MustCompile(`^[0-9]+\.dat$`)
	// blobsTOCRE: the large objects' table of contents (PostgreSQL 17
	// writes one per BLOBS entry).
	blobsTOCRE = regexp.MustCompile(`^blobs(_[0-9]+)?\.toc$`)
	// blobFileRE: what a blobs.toc may name.
	blobFileRE = regexp.MustCompile(`^blob_[0-9]+\.dat$`)
)

var dataSuffixes = []string{"", ".gz", ".lz4", ".zst"}

// dirFiles resolves the files a directory archive's toc.dat names, by
// member(): every name must be one of pg_dump's data file names and exist
// as a plain file of the archive, so a restore reads nothing else. It
// returns the names as found (with their compression suffix).
func dirFiles(a *archive, member func(name string) opener) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	resolve := func(name, what string) (string, error) {
		for _, sfx := range dataSuffixes {
			if member(name+sfx) != nil {
				return name + sfx, nil
			}
		}
		return "", formatErr("the directory archive lacks %s (%s)", name, what)
	}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			files = append(files, name)
		}
	}
	for _, e := range a.entries {
		name := e.filename
		switch {
		case name == "":
			continue
		case dataFileRE.MatchString(name):
			found, err := resolve(name, "the data of "+e.tag)
			if err != nil {
				return nil, err
			}
			add(found)
		case blobsTOCRE.MatchString(name):
			open := member(name)
			if open == nil {
				return nil, formatErr("the directory archive lacks %s (its large objects)", name)
			}
			add(name)
			blobs, err := readBlobsTOC(open, name)
			if err != nil {
				return nil, err
			}
			for _, b := range blobs {
				found, err := resolve(b, "a large object listed in "+name)
				if err != nil {
					return nil, err
				}
				add(found)
			}
		default:
			return nil, formatErr("toc.dat names the data file %s, which is not a pg_dump data file name; it is refused (it could read a file outside the archive)", quoteName(name))
		}
	}
	return files, nil
}

// readBlobsTOC reads the file names of a blobs.toc ("<oid> blob_<oid>.dat"
// per line) and refuses any other name.
func readBlobsTOC(open opener, name string) ([]string, error) {
	r, closeFn, err := open()
	if err != nil {
		return nil, err
	}
	defer closeFn()
	sc := bufio.NewScanner(io.LimitReader(r, maxBlobsTOC+1))
	sc.Buffer(make([]byte, 4096), 64<<10)
	var out []string
	read := 0
	for sc.Scan() {
		line := sc.Text()
		read += len(line) + 1
		if read > maxBlobsTOC {
			return nil, formatErr("%s is larger than %s", name, HumanBytes(maxBlobsTOC))
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		oid, file, ok := strings.Cut(line, " ")
		if !ok || oid == "" || strings.Trim(oid, "0123456789") != "" || !blobFileRE.MatchString(file) {
			return nil, formatErr("%s names %s, which is not a large object file of the archive; it is refused (it could read a file outside the archive)", name, quoteName(line))
		}
		out = append(out, file)
	}
	if err := sc.Err(); err != nil {
		return nil, formatErr("%s is damaged (%v)", name, err)
	}
	return out, nil
}

// checkZipDirectory reads a zip's end of central directory record (and its
// zip64 form) before the directory itself is read, so a zip that declares
// an absurd number of members is refused without holding them in memory.
func checkZipDirectory(ra io.ReaderAt, size int64) error {
	const eocdLen = 22
	tail := int64(eocdLen + 65535)
	if tail > size {
		tail = size
	}
	buf := make([]byte, tail)
	if _, err := ra.ReadAt(buf, size-tail); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	i := strings.LastIndex(string(buf), "PK\x05\x06")
	if i < 0 || i+eocdLen > len(buf) {
		return nil // not found: the zip reader says it is damaged
	}
	rec := buf[i:]
	entries := uint64(binary.LittleEndian.Uint16(rec[10:12]))
	dirSize := uint64(binary.LittleEndian.Uint32(rec[12:16]))
	if entries == 0xffff || dirSize == 0xffffffff {
		// zip64: the locator sits just before the record.
		loc := i - 20
		if loc >= 0 && string(buf[loc:loc+4]) == "PK\x06\x07" {
			off := int64(binary.LittleEndian.Uint64(buf[loc+8 : loc+16]))
			var z [56]byte
			if off >= 0 && off+56 <= size {
				if _, err := ra.ReadAt(z[:], off); err == nil && string(z[:4]) == "PK\x06\x06" {
					entries = binary.LittleEndian.Uint64(z[32:40])
					dirSize = binary.LittleEndian.Uint64(z[40:48])
				}
			}
		}
	}
	if entries > MaxZipEntries {
		return formatErr("the zip holds %d members; at most %d are accepted", entries, MaxZipEntries)
	}
	if dirSize > MaxZipDirectory {
		return formatErr("the zip's directory is %s; at most %s is accepted", HumanBytes(int64(min(dirSize, 1<<62))), HumanBytes(MaxZipDirectory))
	}
	return nil
}

// checkZipSizes refuses a zip whose members declare, in all, more than the
// budget, or more than deflate can produce from the file's size. The zip
// reader holds every member to its declared size, so this bounds what
// reading the zip can ever produce.
func checkZipSizes(total uint64, size int64, b *budget) error {
	if b.left >= 0 && total > uint64(b.limit) {
		return b.exceeded()
	}
	if size > 0 && total/uint64(size) > maxRatio {
		return formatErr("the zip's members declare %s from a %s file, more than compression can give; it is refused (a zip bomb)",
			HumanBytes(int64(min(total, 1<<62))), HumanBytes(size))
	}
	return nil
}
