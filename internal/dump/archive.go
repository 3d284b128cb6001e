package dump

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Archive formats in the header's format byte.
const (
	fmtCustom = 1
	fmtTar    = 3 // also the directory format's toc.dat
)

const maxStr = 64 << 20 // no TOC string is larger; longer means damage

type tocEntry struct {
	dumpID    int64
	tag, desc string
	namespace string
	defn      string
	copyStmt  string
	offState  byte  // custom: 1 not set, 2 set, 3 no data
	offset    int64 // custom, when set
	filename  string
}

type archive struct {
	vmaj, vmin, vrev byte
	intSize, offSize int
	format           byte
	compression      string
	dbname           string
	serverVersion    string
	pgDumpVersion    string
	entries          []tocEntry
}

func (a *archive) version() int { return int(a.vmaj)<<8 | int(a.vmin) }

func v(maj, min int) int { return maj<<8 | min }

// src reads an archive from a stream or, when ra is set, a file whose
// unwanted parts are skipped without reading them.
type src struct {
	ra   io.ReaderAt
	size int64
	br   *bufio.Reader
	pos  int64
}

func newStreamSrc(r io.Reader) *src { return &src{br: bufio.NewReaderSize(r, 256<<10)} }

func newFileSrc(ra io.ReaderAt, size, off int64) *src {
	return &src{ra: ra, size: size, pos: off, br: bufio.NewReaderSize(io.NewSectionReader(ra, off, size-off), 256<<10)}
}

func (s *src) Read(p []byte) (int, error) {
	n, err := s.br.Read(p)
	s.pos += int64(n)
	return n, err
}

func (s *src) full(p []byte) error {
	_, err := io.ReadFull(s, p)
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (s *src) skip(n int64) error {
	if n < 0 {
		return formatErr("the archive is damaged (negative length)")
	}
	if s.ra == nil {
		k, err := io.CopyN(io.Discard, s.br, n)
		s.pos += k
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if int64(s.br.Buffered()) >= n {
		s.br.Discard(int(n))
		s.pos += n
		return nil
	}
	s.pos += n
	if s.pos > s.size {
		return io.ErrUnexpectedEOF
	}
	s.br.Reset(io.NewSectionReader(s.ra, s.pos, s.size-s.pos))
	return nil
}

func (s *src) byte() (byte, error) {
	b, err := s.br.ReadByte()
	if err == nil {
		s.pos++
	} else if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

func (s *src) readInt(a *archive) (int64, error) {
	neg := false
	if a.version() > v(1, 0) {
		b, err := s.byte()
		if err != nil {
			return 0, err
		}
		neg = b != 0
	}
	var buf [8]byte
	if err := s.full(buf[:a.intSize]); err != nil {
		return 0, err
	}
	u := binary.LittleEndian.Uint64(buf[:])
	if u > 1<<62 {
		return 0, formatErr("the archive is damaged (an integer is out of range)")
	}
	if neg {
		return -int64(u), nil
	}
	return int64(u), nil
}

// readStr returns a string; null reports false.
func (s *src) readStr(a *archive) (string, bool, error) {
	n, err := s.readInt(a)
	if err != nil {
		return "", false, err
	}
	if n < 0 {
		return "", false, nil
	}
	if n > maxStr {
		return "", false, formatErr("the archive is damaged (a %d-byte text in its table of contents)", n)
	}
	b := make([]byte, 0, min(n, 64<<10))
	for int64(len(b)) < n {
		chunk := make([]byte, min(n-int64(len(b)), 1<<20))
		if err := s.full(chunk); err != nil {
			return "", false, err
		}
		b = append(b, chunk...)
	}
	return string(b), true, nil
}

func (s *src) str(a *archive) (string, error) {
	v, _, err := s.readStr(a)
	return v, err
}

// readHeader reads the archive header (pg_backup_archiver.c ReadHead).
func readHeader(s *src) (*archive, error) {
	var magic [5]byte
	if err := s.full(magic[:]); err != nil || string(magic[:]) != "PGDMP" {
		return nil, formatErr("not a pg_dump archive")
	}
	a := &archive{}
	var err error
	if a.vmaj, err = s.byte(); err != nil {
		return nil, err
	}
	if a.vmin, err = s.byte(); err != nil {
		return nil, err
	}
	if a.version() > v(1, 0) {
		if a.vrev, err = s.byte(); err != nil {
			return nil, err
		}
	}
	if a.vmaj != 1 {
		return nil, formatErr("the pg_dump archive header is damaged (version %d.%d)", a.vmaj, a.vmin)
	}
	if a.version() < v(1, 10) {
		return nil, formatErr("pg_dump archive version %d.%d is too old (PostgreSQL before 8.4); dump it again with a newer pg_dump", a.vmaj, a.vmin)
	}
	if a.version() > v(1, 16) {
		return nil, formatErr("pg_dump archive version %d.%d is newer than this server understands (PostgreSQL 18 writes 1.16)", a.vmaj, a.vmin)
	}
	b, err := s.byte()
	if err != nil {
		return nil, err
	}
	a.intSize = int(b)
	a.offSize = a.intSize
	if a.version() >= v(1, 7) {
		if b, err = s.byte(); err != nil {
			return nil, err
		}
		a.offSize = int(b)
	}
	if a.intSize < 1 || a.intSize > 8 || a.offSize < 1 || a.offSize > 8 {
		return nil, formatErr("the archive is damaged (integer size %d, offset size %d)", a.intSize, a.offSize)
	}
	if a.format, err = s.byte(); err != nil {
		return nil, err
	}
	if a.format != fmtCustom && a.format != fmtTar {
		return nil, formatErr("the archive has an unknown format code %d", a.format)
	}
	if a.version() >= v(1, 15) {
		alg, err := s.byte()
		if err != nil {
			return nil, err
		}
		switch alg {
		case 0:
			a.compression = "none"
		case 1:
			a.compression = "gzip"
		case 2:
			a.compression = "lz4"
		case 3:
			a.compression = "zstd"
		default:
			return nil, formatErr("the archive uses an unknown compression (%d)", alg)
		}
	} else {
		level, err := s.readInt(a)
		if err != nil {
			return nil, err
		}
		a.compression = "gzip"
		if level == 0 {
			a.compression = "none"
		}
	}
	for range 7 { // creation time
		if _, err := s.readInt(a); err != nil {
			return nil, err
		}
	}
	if a.dbname, err = s.str(a); err != nil {
		return nil, err
	}
	if a.serverVersion, err = s.str(a); err != nil {
		return nil, err
	}
	if a.pgDumpVersion, err = s.str(a); err != nil {
		return nil, err
	}
	return a, nil
}

// readTOC reads the table of contents (ReadToc).
func readTOC(s *src, a *archive) error {
	count, err := s.readInt(a)
	if err != nil {
		return err
	}
	if count < 0 || count > 10_000_000 {
		return formatErr("the archive is damaged (%d table of contents entries)", count)
	}
	for i := int64(0); i < count; i++ {
		var e tocEntry
		if e.dumpID, err = s.readInt(a); err != nil {
			return err
		}
		if _, err = s.readInt(a); err != nil { // hadDumper
			return err
		}
		if _, err = s.str(a); err != nil { // tableoid
			return err
		}
		if _, err = s.str(a); err != nil { // oid
			return err
		}
		if e.tag, err = s.str(a); err != nil {
			return err
		}
		if e.desc, err = s.str(a); err != nil {
			return err
		}
		if _, err = s.readInt(a); err != nil { // section
			return err
		}
		if e.defn, err = s.str(a); err != nil {
			return err
		}
		if _, err = s.str(a); err != nil { // dropStmt
			return err
		}
		if e.copyStmt, err = s.str(a); err != nil {
			return err
		}
		if e.namespace, err = s.str(a); err != nil {
			return err
		}
		if _, err = s.str(a); err != nil { // tablespace
			return err
		}
		if a.version() >= v(1, 14) {
			if _, err = s.str(a); err != nil { // tableam
				return err
			}
		}
		if a.version() >= v(1, 16) {
			if _, err = s.readInt(a); err != nil { // relkind
				return err
			}
		}
		if _, err = s.str(a); err != nil { // owner
			return err
		}
		if _, err = s.str(a); err != nil { // withOids
			return err
		}
		for deps := 0; ; deps++ {
			_, ok, err := s.readStr(a)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if deps > 1_000_000 {
				return formatErr("the archive is damaged (endless dependency list)")
			}
		}
		switch a.format {
		case fmtCustom:
			if e.offState, err = s.byte(); err != nil {
				return err
			}
			var buf [8]byte
			if err := s.full(buf[:a.offSize]); err != nil {
				return err
			}
			e.offset = int64(binary.LittleEndian.Uint64(buf[:]) & (1<<63 - 1))
		default:
			if e.filename, err = s.str(a); err != nil {
				return err
			}
		}
		a.entries = append(a.entries, e)
	}
	return nil
}

// wanted returns the data entries inspection reads, by dump id, and the
// column lists of their tables (for INSERT-mode data).
func (a *archive) wanted(t *tables) (map[int64]tocEntry, map[string][]string) {
	want := map[int64]tocEntry{}
	cols := map[string][]string{}
	for _, e := range a.entries {
		switch e.desc {
		case "TABLE DATA":
			if t.sinkFor(e.tag) != nil {
				want[e.dumpID] = e
			}
		case "TABLE":
			if _, c, ok := createTableColumns(e.defn); ok && t.sinkFor(e.tag) != nil {
				cols[unqualified(e.tag)] = c
			}
		}
	}
	return want, cols
}

// readTableData decodes one entry's data (COPY rows or INSERT statements).
func readTableData(r io.Reader, e tocEntry, cols map[string][]string, t *tables) error {
	if table, c, ok := parseCopyStmt(e.copyStmt); ok {
		return readCopyData(bufio.NewReaderSize(r, 256<<10), c, t.sinkFor(table))
	}
	var info Info
	return inspectSQLWith(r, &info, t, cols)
}

// decompressor wraps an entry's data stream by the archive's compression.
func decompressor(r io.Reader, compression string) (io.Reader, func(), error) {
	switch compression {
	case "gzip":
		z, err := zlib.NewReader(r)
		if err != nil {
			return nil, nil, formatErr("a compressed data block is damaged (%v)", err)
		}
		return z, func() { z.Close() }, nil
	case "lz4":
		return lz4.NewReader(r), func() {}, nil
	case "zstd":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	}
	return r, func() {}, nil
}

// chunkReader joins a custom archive block's chunks: Int len; data; … Int 0.
type chunkReader struct {
	s    *src
	a    *archive
	left int64
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		n, err := c.s.readInt(c.a)
		if err != nil {
			return 0, err
		}
		if n < 0 {
			return 0, formatErr("the archive is damaged (negative block length)")
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	k, err := c.s.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(k)
	if errors.Is(err, io.EOF) && c.left > 0 {
		err = io.ErrUnexpectedEOF
	} else if errors.Is(err, io.EOF) {
		err = nil
	}
	return k, err
}

// drain consumes the rest of the block (to its Int 0 terminator).
func (c *chunkReader) drain() error {
	for {
		if c.left > 0 {
			if err := c.s.skip(c.left); err != nil {
				return err
			}
			c.left = 0
		}
		if c.done {
			return nil
		}
		n, err := c.s.readInt(c.a)
		if err != nil {
			return err
		}
		if n < 0 {
			return formatErr("the archive is damaged (negative block length)")
		}
		if n == 0 {
			c.done = true
			return nil
		}
		c.left = n
	}
}

// readCustomData reads the wanted blocks of a custom archive: by offset
// when the TOC has them and the file is seekable, otherwise by scanning
// the blocks in order, skipping the others without decompressing them.
func readCustomData(s *src, a *archive, t *tables) error {
	want, cols := a.wanted(t)
	if len(want) == 0 {
		return nil
	}
	readBlock := func(s *src, e tocEntry) error {
		c := &chunkReader{s: s, a: a}
		r, closeFn, err := decompressor(c, a.compression)
		if err != nil {
			return err
		}
		err = readTableData(r, e, cols, t)
		closeFn()
		if err != nil {
			return fmt.Errorf("table %s: %w", e.tag, err)
		}
		return c.drain()
	}
	allSet := s.ra != nil
	for _, e := range want {
		if e.offState != 2 {
			allSet = false
		}
	}
	if allSet {
		for _, e := range want {
			bs := newFileSrc(s.ra, s.size, e.offset)
			typ, err := bs.byte()
			if err != nil {
				return err
			}
			id, err := bs.readInt(a)
			if err != nil {
				return err
			}
			if typ != 1 || id != e.dumpID {
				return formatErr("the archive is damaged (the data of %s is not where its table of contents says)", e.tag)
			}
			if err := readBlock(bs, e); err != nil {
				return err
			}
		}
		return nil
	}
	for found := 0; found < len(want); {
		typ, err := s.byte()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil // no more blocks; some tables had no data
		}
		if err != nil {
			return err
		}
		id, err := s.readInt(a)
		if err != nil {
			return err
		}
		switch typ {
		case 1: // table data
			if e, ok := want[id]; ok {
				if err := readBlock(s, e); err != nil {
					return err
				}
				found++
				continue
			}
			if err := (&chunkReader{s: s, a: a}).drain(); err != nil {
				return err
			}
		case 3: // large objects: Int oid, chunks, … until oid 0
			for {
				oid, err := s.readInt(a)
				if err != nil {
					return err
				}
				if oid == 0 {
					break
				}
				if err := (&chunkReader{s: s, a: a}).drain(); err != nil {
					return err
				}
			}
		default:
			return formatErr("the archive is damaged (unknown data block type %d)", typ)
		}
	}
	return nil
}

func (a *archive) fill(info *Info) {
	info.ArchiveVersion = fmt.Sprintf("%d.%d", a.vmaj, a.vmin)
	info.Compression = a.compression
	info.DBName = a.dbname
	info.PostgreSQL = majorOf(a.serverVersion)
	info.PgDump = majorOf(a.pgDumpVersion)
}
