package dump_test

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// dirFixture reads the folder pg_dump --format=directory wrote, from the
// committed tar of it (make-fixtures.sh), as name -> content.
func dirFixture(t testing.TB, series string) map[string][]byte {
	t.Helper()
	f, err := os.Open("testdata/fixtures/odoo" + strings.Split(series, ".")[0] + ".dir.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[path.Base(h.Name)] = b
	}
	return out
}

func mapFS(files map[string][]byte) fstest.MapFS {
	m := fstest.MapFS{}
	for n, b := range files {
		m[n] = &fstest.MapFile{Data: b, Mode: 0o644}
	}
	return m
}

// renameData rewrites, in a toc.dat, the data file name from as to (a
// string of the archive: a sign byte, a 4-byte length, the bytes).
func renameData(toc []byte, from, to string) []byte {
	str := func(s string) []byte {
		b := []byte{0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], uint32(len(s)))
		return append(b, s...)
	}
	return bytes.Replace(toc, str(from), str(to), 1)
}

// TestInspectFS reads the folders pg_dump wrote, on disk and in memory:
// the same facts as the tar of the same folder, with no layer around.
func TestInspectFS(t *testing.T) {
	for _, series := range []string{"12.0", "16.0"} {
		t.Run(series, func(t *testing.T) {
			files := dirFixture(t, series)
			dir := t.TempDir()
			for n, b := range files {
				os.WriteFile(filepath.Join(dir, n), b, 0o600)
			}
			tarred, err := dump.InspectFile("testdata/fixtures/odoo" + strings.Split(series, ".")[0] + ".dir.tar")
			if err != nil {
				t.Fatal(err)
			}
			for _, fsys := range []fs.FS{os.DirFS(dir), mapFS(files)} {
				info, err := dump.InspectFS(fsys, dump.Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if info.Format != "directory" || !slices.Equal(info.Compressions, []string{"pgdmp_directory", "sql"}) || info.DirTOC != "toc.dat" {
					t.Errorf("format %s layers %v toc %s", info.Format, info.Compressions, info.DirTOC)
				}
				if !slices.Equal(info.DirFiles, tarred.DirFiles) || len(info.DirFiles) != len(files)-1 {
					t.Errorf("data files %v, the tar's %v", info.DirFiles, tarred.DirFiles)
				}
				if info.DatabaseVersion != series || info.DatabaseUUID != uuids[series] || info.PostgreSQL != "15" ||
					info.ArchiveVersion != "1.14" || info.DBName != tarred.DBName || info.Compression != "gzip" || info.Filestore {
					t.Errorf("info %+v", info)
				}
				if len(info.Modules) != 4 || info.Modules["base"] != series+".1.3" {
					t.Errorf("modules %v", info.Modules)
				}
			}
		})
	}
}

// TestInspectFSRefuses: a folder that reaches outside itself, lacks a file
// toc.dat names or holds something a folder of pg_dump's may not is
// refused with a FormatError; files toc.dat does not name are ignored.
func TestInspectFSRefuses(t *testing.T) {
	files := dirFixture(t, "16.0")
	var someData string
	for n := range files {
		if n != "toc.dat" {
			someData = strings.TrimSuffix(n, ".gz")
			break
		}
	}
	with := func(change func(m fstest.MapFS)) fstest.MapFS {
		m := mapFS(files)
		change(m)
		return m
	}
	tocNaming := func(name string) fstest.MapFS {
		return with(func(m fstest.MapFS) {
			toc := renameData(files["toc.dat"], someData, name)
			if bytes.Equal(toc, files["toc.dat"]) {
				t.Fatalf("%s not found in toc.dat", someData)
			}
			m["toc.dat"] = &fstest.MapFile{Data: toc}
		})
	}
	for _, tc := range []struct {
		name string
		fsys fstest.MapFS
		lim  int64
		want string
	}{
		{"toc.dat naming ../../etc/passwd", tocNaming("../../etc/passwd"), 0, "not a pg_dump data file name"},
		{"toc.dat naming an absolute path", tocNaming("/etc/passwd.dat"), 0, "not a pg_dump data file name"},
		{"missing data file", with(func(m fstest.MapFS) { delete(m, someData+".gz") }), 0, "lacks " + someData},
		{"no toc.dat", with(func(m fstest.MapFS) { delete(m, "toc.dat") }), 0, "no toc.dat"},
		{"empty", fstest.MapFS{}, 0, "empty"},
		{"a link", with(func(m fstest.MapFS) { m["x"] = &fstest.MapFile{Mode: fs.ModeSymlink, Data: []byte("/etc/passwd")} }), 0, "symbolic link"},
		{"a pipe", with(func(m fstest.MapFS) { m["p"] = &fstest.MapFile{Mode: fs.ModeNamedPipe} }), 0, "not a plain file"},
		{"a data file that is a link", with(func(m fstest.MapFS) {
			m[someData+".gz"] = &fstest.MapFile{Mode: fs.ModeSymlink, Data: []byte("/etc/passwd")}
		}), 0, "symbolic link"},
		{"a control character", with(func(m fstest.MapFS) { m["a\nb"] = &fstest.MapFile{} }), 0, "control character"},
		{"toc.dat of a custom archive", with(func(m fstest.MapFS) {
			b, _ := os.ReadFile("testdata/fixtures/odoo16.custom.dump")
			m["toc.dat"] = &fstest.MapFile{Data: b}
		}), 0, "not the table of contents of a directory archive"},
		{"over the limit", mapFS(files), 20_000, "expands past"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dump.InspectFS(tc.fsys, dump.Limits{MaxExpanded: tc.lim})
			if err == nil || !dump.IsFormatError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a FormatError containing %q", err, tc.want)
			}
			if tc.lim > 0 && !errors.Is(err, dump.ErrTooLarge) {
				t.Fatalf("%v does not match ErrTooLarge", err)
			}
		})
	}
	extra := with(func(m fstest.MapFS) {
		m["notes.txt"] = &fstest.MapFile{Data: []byte("x")}
		m["9999.dat.gz"] = &fstest.MapFile{Data: []byte("not gzip")}
		m["filestore/ab/abc"] = &fstest.MapFile{Data: []byte("x")}
	})
	info, err := dump.InspectFS(extra, dump.Limits{})
	if err != nil || slices.Contains(info.DirFiles, "9999.dat.gz") || info.Filestore {
		t.Fatalf("extra files: %v %v", info.DirFiles, err)
	}
}

// TestInspectFSDamaged cuts and flips toc.dat and a data file at many
// points: an answer or a FormatError, never a panic or another error.
func TestInspectFSDamaged(t *testing.T) {
	files := dirFixture(t, "12.0")
	for _, name := range []string{"toc.dat", "3420.dat.gz"} {
		data := files[name]
		for i := 0; i < 32; i++ {
			cut := len(data) * i / 32
			damaged := bytes.Clone(data)
			for j := cut; j < min(cut+16, len(damaged)); j++ {
				damaged[j] ^= 0x5a
			}
			for _, b := range [][]byte{data[:cut], damaged} {
				m := mapFS(files)
				m[name] = &fstest.MapFile{Data: b}
				if _, err := dump.InspectFS(m, dump.Limits{}); err != nil && !dump.IsFormatError(err) {
					t.Errorf("%s cut or damaged at %d: %v is not a FormatError", name, cut, err)
				}
			}
		}
	}
}

// FuzzInspectFS: whatever toc.dat holds, beside the fixture's data files,
// the folder's inspection answers or fails with a FormatError.
//
//	go test -run XXX -fuzz FuzzInspectFS -fuzztime 5m -fuzzminimizetime 0 ./internal/dump/
func FuzzInspectFS(f *testing.F) {
	files := dirFixture(f, "16.0")
	f.Add(files["toc.dat"])
	f.Add(renameData(files["toc.dat"], "3412.dat", "../x"))
	f.Add([]byte("PGDMP\x01\x0e\x00\x04\x08\x03"))
	f.Fuzz(func(t *testing.T, toc []byte) {
		m := mapFS(files)
		m["toc.dat"] = &fstest.MapFile{Data: toc}
		if _, err := dump.InspectFS(m, dump.Limits{MaxExpanded: 64 << 20}); err != nil && !dump.IsFormatError(err) {
			t.Fatalf("not a FormatError: %v", err)
		}
	})
}
