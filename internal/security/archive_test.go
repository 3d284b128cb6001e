package security_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/upgradetest"
)

// tarEntry is one member of a tar the tests build.
type tarEntry struct {
	name     string
	body     []byte
	typeflag byte // 0: a plain file
	link     string
}

func tarred(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: e.typeflag, Linkname: e.link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dirArchive reads the fixture's directory archive (zipped, members under
// origin.dump/) as name -> content.
func dirArchive(t testing.TB) (names []string, files map[string][]byte) {
	t.Helper()
	b := fixture(t, "odoo12.dir.zip")
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	files = map[string][]byte{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		data, _ := io.ReadAll(rc)
		rc.Close()
		name := path.Base(f.Name)
		names = append(names, name)
		files[name] = data
	}
	return names, files
}

// dataFile is a data file the fixture's toc.dat names (an 8-character
// name such as "3001.dat", whose ".gz" file is in the archive).
func dataFile(t testing.TB, files map[string][]byte) string {
	t.Helper()
	for name := range files {
		if regexp.MustCompile(`^[0-9]{4}\.dat\.gz$`).MatchString(name) && bytes.Contains(files["toc.dat"], []byte(strings.TrimSuffix(name, ".gz"))) {
			return strings.TrimSuffix(name, ".gz")
		}
	}
	t.Fatal("no data file named in toc.dat")
	return ""
}

func dirZip(t testing.TB, files map[string][]byte, prefix string, extra ...zipEntry) []byte {
	t.Helper()
	var entries []zipEntry
	for name, body := range files {
		entries = append(entries, zipEntry{name: prefix + name, body: body})
	}
	return zipped(t, append(entries, extra...)...)
}

// TestArchiveMembers: a directory archive (zipped or tarred), an Odoo
// backup and its filestore may only hold plain files inside themselves:
// an absolute name, "..", a link or a device fails the request before
// anything is restored or extracted.
func TestArchiveMembers(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin", Workers: 4})
	_, files := dirArchive(t)
	data := dataFile(t, files)
	sql := fixture(t, "odoo12.sql")
	without := func(name string) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range files {
			if k != name {
				out[k] = v
			}
		}
		return out
	}
	var tarOf = func(extra ...tarEntry) []byte {
		var entries []tarEntry
		for name, body := range without(data + ".gz") {
			entries = append(entries, tarEntry{name: "origin.dump/" + name, body: body})
		}
		return tarred(t, append(entries, extra...)...)
	}
	cases := []struct {
		name, filename string
		upload         []byte
		want           string
	}{
		{"zip member with ..", "db.zip", dirZip(t, files, "origin.dump/", zipEntry{name: "origin.dump/../../../x.dat", body: []byte("x")}), "reaches outside"},
		{"zip member with an absolute name", "db.zip", dirZip(t, files, "origin.dump/", zipEntry{name: "/etc/x.dat", body: []byte("x")}), "absolute path"},
		{"zip member with a backslash", "db.zip", dirZip(t, files, "origin.dump/", zipEntry{name: `..\..\x.dat`, body: []byte("x")}), "backslash"},
		{"zip data file as a symbolic link", "db.zip", dirZip(t, without(data+".gz"), "origin.dump/",
			zipEntry{name: "origin.dump/" + data, body: []byte("/etc/passwd"), mode: os.ModeSymlink | 0o777}), "symbolic link"},
		{"tar data file as a symbolic link", "db.tar", tarOf(tarEntry{name: "origin.dump/" + data, typeflag: tar.TypeSymlink, link: "/etc/passwd"}), "symbolic link"},
		{"tar data file as a hard link", "db.tar", tarOf(tarEntry{name: "origin.dump/" + data, typeflag: tar.TypeLink, link: "/etc/passwd"}), "hard link"},
		{"tar member as a device", "db.tar", tarOf(tarEntry{name: "origin.dump/" + data, typeflag: tar.TypeChar}), "device"},
		{"tar member as a pipe", "db.tar", tarOf(tarEntry{name: "origin.dump/" + data, typeflag: tar.TypeFifo}), "not a plain file"},
		{"tar member with ..", "db.tar", tarOf(tarEntry{name: "origin.dump/../../" + data, body: files[data+".gz"]}), "reaches outside"},
		{"two toc.dat", "db.zip", dirZip(t, files, "origin.dump/", zipEntry{name: "other.dump/toc.dat", body: files["toc.dat"]}), "two toc.dat"},
		{"filestore member with ..", "db.zip", odooBackup(t, sql, zipEntry{name: "filestore/../../../x", body: []byte("x")}), "reaches outside"},
		{"filestore member as a symbolic link", "db.zip", odooBackup(t, sql,
			zipEntry{name: "filestore/ab/abc", body: []byte("/etc/shadow"), mode: os.ModeSymlink | 0o777}), "symbolic link"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.run(tc.filename, tc.upload)
			assertRefused(t, r, tc.want)
		})
	}
}

// TestTOCNames: toc.dat (and blobs.toc) name the files pg_restore reads;
// a name that reaches outside the archive would copy a host file into the
// restored database and hand it to the uploader in the upgraded dump. Only
// pg_dump's own data file names, of plain files in the archive, pass.
func TestTOCNames(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin", Workers: 4})
	_, files := dirArchive(t)
	data := dataFile(t, files)
	withTOC := func(name string) map[string][]byte {
		if len(name) != len(data) {
			t.Fatalf("%q must be as long as %q (the TOC stores lengths)", name, data)
		}
		out := map[string][]byte{}
		for k, v := range files {
			out[k] = v
		}
		out["toc.dat"] = bytes.ReplaceAll(files["toc.dat"], []byte(data), []byte(name))
		return out
	}
	// A directory dump with a large object: blobs.toc names its file.
	lo := pgDumpOf(t, "SELECT lo_from_bytea(0, 'a large object');", "d")
	zr, err := zip.NewReader(bytes.NewReader(lo), int64(len(lo)))
	if err != nil {
		t.Fatal(err)
	}
	var loEntries []zipEntry
	for _, f := range zr.File {
		rc, _ := f.Open()
		body, _ := io.ReadAll(rc)
		rc.Close()
		if path.Base(f.Name) == "blobs.toc" {
			body = regexp.MustCompile(`blob_[0-9]+\.dat`).ReplaceAll(body, []byte("../../../../../../../../etc/passwd"))
		}
		loEntries = append(loEntries, zipEntry{name: f.Name, body: body})
	}
	cases := []struct {
		name   string
		upload []byte
		want   string
	}{
		{"toc.dat names a file above the archive", dirZip(t, withTOC("../x.dat"), "origin.dump/"), "not a pg_dump data file name"},
		{"toc.dat names an absolute path", dirZip(t, withTOC("/x/y.dat"), "origin.dump/"), "not a pg_dump data file name"},
		{"toc.dat names a file the archive lacks", dirZip(t, withTOC("9999.dat"), "origin.dump/"), "lacks 9999.dat"},
		{"blobs.toc names a host file", zipped(t, loEntries...), "not a large object file of the archive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.run("db.zip", tc.upload)
			assertRefused(t, r, tc.want)
		})
	}
	t.Run("a large object in a valid archive", func(t *testing.T) {
		if r := c.run("db.zip", lo); r.State != "done" {
			t.Fatalf("state %s: %s", r.State, message(r))
		}
	})
}

// TestTarOfFolderContents: a directory archive tarred the most common way,
// tar cf dump.tar -C dir . (members ./toc.dat, ./3001.dat.gz), is read
// like any other.
func TestTarOfFolderContents(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	names, files := dirArchive(t)
	entries := []tarEntry{{name: "./", typeflag: tar.TypeDir}}
	for _, n := range names {
		entries = append(entries, tarEntry{name: "./" + n, body: files[n]})
	}
	r := c.run("db.tar", tarred(t, entries...))
	if r.State != "done" {
		t.Fatalf("state %s: %s", r.State, message(r))
	}
}

// TestBombs: what an upload expands to is bounded by
// UPGRADE_MAX_RESTORE_BYTES, and a zip that declares an absurd directory
// fails before it is read.
func TestBombs(t *testing.T) {
	const limit = 4 << 20
	c := newClient(t, upgradetest.Options{Engine: "builtin", Workers: 4, MaxRestoreBytes: limit})
	big := atEnd(fixture(t, "odoo12.sql"), "-- "+strings.Repeat("x", 6<<20)+"\n")
	cases := []struct {
		name, filename string
		upload         []byte
		want           string
	}{
		{"gzip bomb", "db.sql.gz", gzipped(t, big), "expands past 4 MiB"},
		{"zip bomb", "db.zip", odooBackup(t, big), "expands past 4 MiB"},
		{"zip claiming three million members", "db.zip", zip64Claiming(3_000_000), "at most 2000000"},
		{"database growth", "db.dump", pgDumpOf(t, "CREATE TABLE public.big AS SELECT repeat('x', 500) AS s FROM generate_series(1, 30000);", "c"),
			"grew past 4 MiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.run(tc.filename, tc.upload)
			assertRefused(t, r, tc.want)
		})
	}
}

// zip64Claiming is an empty zip whose zip64 end of central directory
// declares n members.
func zip64Claiming(n uint64) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	// zip64 end of central directory record, at offset 0.
	b.WriteString("PK\x06\x06")
	binary.Write(&b, le, uint64(44))   // size of the rest
	binary.Write(&b, le, uint16(45))   // made by
	binary.Write(&b, le, uint16(45))   // needed
	binary.Write(&b, le, uint32(0))    // this disk
	binary.Write(&b, le, uint32(0))    // disk of the directory
	binary.Write(&b, le, n)            // entries on this disk
	binary.Write(&b, le, n)            // entries
	binary.Write(&b, le, uint64(46*n)) // directory size
	binary.Write(&b, le, uint64(0))    // directory offset
	b.WriteString("PK\x06\x07")        // locator
	binary.Write(&b, le, uint32(0))    // disk
	binary.Write(&b, le, uint64(4))    // offset of the zip64 record (after "PK\x03\x04")
	binary.Write(&b, le, uint32(1))    // disks
	b.WriteString("PK\x05\x06")        // end of central directory
	binary.Write(&b, le, [4]uint16{0, 0, 0xffff, 0xffff})
	binary.Write(&b, le, [2]uint32{0xffffffff, 0xffffffff})
	binary.Write(&b, le, uint16(0))
	return append([]byte("PK\x03\x04"), b.Bytes()...)
}

// TestRestoreErrorsHideServerPaths: when pg_restore fails on a damaged
// data file, the customer reads the reason without the server's paths
// (its data directory, the run's work folder); the log keeps them.
func TestRestoreErrorsHideServerPaths(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	_, files := dirArchive(t)
	// Damage the data of a table inspection does not read (res_partner's
	// is the largest file): a gzip stream cut in the middle.
	var victim string
	for name, body := range files {
		if strings.HasSuffix(name, ".dat.gz") && (victim == "" || len(body) > len(files[victim])) {
			victim = name
		}
	}
	files[victim] = files[victim][:len(files[victim])/2]
	r := c.run("db.zip", dirZip(t, files, "origin.dump/"))
	if r.State != "invalid" {
		t.Fatalf("state %s: %s", r.State, message(r))
	}
	msg := message(r)
	for _, p := range []string{c.srv.DataDir, os.TempDir() + "/", "/work", "restore-dir/"} {
		if strings.Contains(msg, p) {
			t.Fatalf("customer_message shows the server path %q: %s", p, msg)
		}
	}
	if !strings.Contains(msg, strings.TrimSuffix(victim, ".gz")) {
		t.Fatalf("customer_message %q does not name the damaged file %s", msg, victim)
	}
}
