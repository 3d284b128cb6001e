package dump

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"regexp"
)

// Writer is what a dump's header says of the pg_dump that wrote it.
type Writer struct {
	// PgDump is its major version ("15"; "" when the header does not say).
	PgDump string
	// Archive is its archive version ("1.14"; "" for plain SQL).
	Archive string
}

// headSize is how much of a dump WrittenBy reads: pg_dump's header and
// SQL's first comments fit in far less.
const headSize = 64 << 10

var dumpedByAnyRE = regexp.MustCompile(`(?m)^-- Dumped by pg_dump version (\S+)`)

// WrittenBy reads the header of a dump (custom, plain SQL, a directory
// archive's toc.dat, or one of these in gzip, zip or tar, as uploads come)
// and says which pg_dump wrote it, reading a few KiB; the zero Writer when
// it cannot tell. It never fails: a dump it cannot read is for Inspect to
// refuse.
func WrittenBy(ra io.ReaderAt, size int64) Writer {
	head := make([]byte, min(size, headSize))
	n, _ := ra.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		if checkZipDirectory(ra, size) != nil {
			return Writer{}
		}
		zr, err := zip.NewReader(ra, size)
		if err != nil {
			return Writer{}
		}
		for _, f := range zr.File {
			name := path.Clean(f.Name)
			if name == "dump.sql" || path.Base(name) == "toc.dat" {
				rc, err := f.Open()
				if err != nil {
					return Writer{}
				}
				defer rc.Close()
				return writerOfStream(rc, 0)
			}
		}
		return Writer{}
	case isTar(head):
		// toc.dat comes first in pg_dump's tar format, anywhere in a tar
		// of a directory archive: member data is skipped by seeking.
		tr := tar.NewReader(io.NewSectionReader(ra, 0, size))
		for range maxTarHeaders {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if path.Base(h.Name) == "toc.dat" {
				return writerOfStream(io.LimitReader(tr, headSize), 1)
			}
		}
		return Writer{}
	}
	return writerOfStream(bytes.NewReader(head), 0)
}

// maxTarHeaders bounds the members WrittenBy looks through in a tar.
const maxTarHeaders = 100_000

func writerOfStream(r io.Reader, depth int) Writer {
	if depth > maxDepth {
		return Writer{}
	}
	br := bufio.NewReaderSize(r, headSize)
	head, _ := br.Peek(headSize)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		if err != nil {
			return Writer{}
		}
		return writerOfStream(io.LimitReader(z, headSize), depth+1)
	case bytes.HasPrefix(head, []byte("PGDMP")):
		a, err := readHeader(newStreamSrc(bytes.NewReader(head)))
		if err != nil {
			return Writer{}
		}
		return Writer{PgDump: majorOf(a.pgDumpVersion), Archive: fmt.Sprintf("%d.%d", a.vmaj, a.vmin)}
	case isTar(head):
		// toc.dat comes first in pg_dump's tar format, after the folder's
		// own entry in a tar of a directory archive.
		tr := tar.NewReader(bytes.NewReader(head))
		for range 4 {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if path.Base(h.Name) == "toc.dat" {
				return writerOfStream(io.LimitReader(tr, headSize), depth+1)
			}
		}
		return Writer{}
	case looksLikeSQL(head):
		if m := dumpedByAnyRE.FindSubmatch(head); m != nil {
			return Writer{PgDump: majorOf(string(m[1]))}
		}
	}
	return Writer{}
}
