package dump_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

type want struct {
	compressions []string
	format       string
	series       string
}

// fixtures are made by testdata/make-fixtures.sh (pg_dump 15).
var fixtures = map[string]want{
	"custom.dump":         {[]string{"pgdmp_custom", "sql"}, "custom", ""},
	"custom-piped.dump":   {[]string{"pgdmp_custom", "sql"}, "custom", ""},
	"custom-z0.dump":      {[]string{"pgdmp_custom", "sql"}, "custom", ""},
	"custom-inserts.dump": {[]string{"pgdmp_custom", "sql"}, "custom", ""},
	"custom.dump.gz":      {[]string{"gzip", "pgdmp_custom", "sql"}, "custom", ""},
	"tar":                 {[]string{"pgdmp_tar", "sql"}, "tar", ""},
	"dir.zip":             {[]string{"zip", "pgdmp_directory", "sql"}, "directory", ""},
	"dir.tar":             {[]string{"tar", "pgdmp_directory", "sql"}, "directory", ""},
	"sql":                 {[]string{"sql"}, "sql", ""},
	"sql.gz":              {[]string{"gzip", "sql"}, "sql", ""},
	"inserts.sql":         {[]string{"sql"}, "sql", ""},
	"odoo-backup.zip":     {[]string{"zip", "sql"}, "sql", ""},
}

var uuids = map[string]string{"12.0": "a1b2c3d4-6cb0-11e9-8f2b-0242ac110002", "16.0": "3c1c7d2e-8a8b-11ee-9b6a-0242ac120002"}

func checkFixtures(t *testing.T, dir string) {
	t.Helper()
	for _, series := range []string{"12.0", "16.0"} {
		prefix := "odoo" + strings.Split(series, ".")[0] + "."
		for suffix, w := range fixtures {
			name := prefix + suffix
			t.Run(name, func(t *testing.T) {
				info, err := dump.InspectFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(info.Compressions, w.compressions) || info.Format != w.format {
					t.Errorf("layers %v format %s, want %v %s", info.Compressions, info.Format, w.compressions, w.format)
				}
				if info.DatabaseVersion != series || info.DatabaseUUID != uuids[series] || info.PostgreSQL != "15" {
					t.Errorf("version %q uuid %q postgresql %q", info.DatabaseVersion, info.DatabaseUUID, info.PostgreSQL)
				}
				if got := info.Filestore; got != (suffix == "odoo-backup.zip") {
					t.Errorf("filestore = %v", got)
				}
				wantMods := map[string]string{"base": series + ".1.3", "web": series + ".1.0", "mail": series + ".1.10", "l10n_be": series + ".2.0"}
				if len(info.Modules) != len(wantMods) {
					t.Errorf("modules = %v", info.Modules)
				}
				for m, v := range wantMods {
					if info.Modules[m] != v {
						t.Errorf("module %s = %q, want %q", m, info.Modules[m], v)
					}
				}
				if w.format != "sql" && (info.ArchiveVersion != "1.14" || info.DBName == "") {
					t.Errorf("archive version %q db %q", info.ArchiveVersion, info.DBName)
				}
			})
		}
	}
}

// TestCommittedFixtures reads the dumps committed under testdata/fixtures.
func TestCommittedFixtures(t *testing.T) { checkFixtures(t, "testdata/fixtures") }

// TestFreshFixtures makes the fixtures again with this machine's pg_dump,
// so the committed ones cannot drift from what make-fixtures.sh writes.
func TestFreshFixtures(t *testing.T) {
	url := os.Getenv("UPGRADE_TEST_DATABASE_URL")
	if url == "" {
		t.Skip("UPGRADE_TEST_DATABASE_URL is unset (set by .ci/run); the committed fixtures are still checked")
	}
	for _, tool := range []string{"pg_dump", "psql", "python3", "gzip", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	dir := t.TempDir()
	for _, series := range []string{"12.0", "16.0"} {
		cmd := exec.Command("bash", "testdata/make-fixtures.sh", dir, series)
		cmd.Env = append(os.Environ(), "FIXTURE_DATABASE_URL="+url)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make-fixtures.sh %s: %v\n%s", series, err, out)
		}
	}
	checkFixtures(t, dir)
}

func TestRejects(t *testing.T) {
	sqlDump, err := os.ReadFile("testdata/fixtures/odoo16.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "empty"},
		{"random text", "hello, this is not a dump\n", "not a database dump"},
		{"png", "\x89PNG\r\n\x1a\n0000", "not a database dump"},
		{"xz", "\xfd7zXZ\x00rest", "compressed with xz"},
		{"bzip2", "BZh91AY&SY", "compressed with bzip2"},
		{"cluster dump", "--\n-- PostgreSQL database cluster dump\n--\n\nSET x = 1;\n", "pg_dumpall"},
		{"sql without odoo", "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE t (a int);\n", "no Odoo database"},
		{"future archive", "PGDMP\x01\x11\x00\x04\x08\x01", "newer than this server"},
		{"ancient archive", "PGDMP\x01\x05\x00\x04\x08\x01", "too old"},
		{"truncated archive header", "PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01", "truncated"},
		{"sql truncated before the modules", string(sqlDump[:2000]), "no Odoo database"},
		{"zip without dump", zipOf(t, map[string]string{"a.txt": "x", "b.txt": "y"}), "no dump.sql"},
		{"zip with only a filestore", zipOf(t, map[string]string{"filestore/ab/abc": "x", "manifest.json": "{}"}), "no dump.sql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dump.Inspect(strings.NewReader(tc.data), int64(len(tc.data)))
			if err == nil || !dump.IsFormatError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a FormatError containing %q", err, tc.want)
			}
		})
	}
}

// TestTruncatedAndDamaged cuts and flips every fixture at many points:
// the result is an answer or a FormatError, never a panic or another error.
func TestTruncatedAndDamaged(t *testing.T) {
	files, _ := filepath.Glob("testdata/fixtures/*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 24; i++ {
			cut := len(data) * i / 24
			if _, err := dump.Inspect(bytes.NewReader(data[:cut]), int64(cut)); err != nil && !dump.IsFormatError(err) {
				t.Errorf("%s cut at %d: %v is not a FormatError", filepath.Base(f), cut, err)
			}
			damaged := bytes.Clone(data)
			for j := cut; j < min(cut+16, len(damaged)); j++ {
				damaged[j] ^= 0x5a
			}
			if _, err := dump.Inspect(bytes.NewReader(damaged), int64(len(damaged))); err != nil && !dump.IsFormatError(err) {
				t.Errorf("%s damaged at %d: %v is not a FormatError", filepath.Base(f), cut, err)
			}
		}
	}
}

// FuzzInspect: no input panics or fails with anything but a FormatError.
// Seeds: the fixtures and testdata/fuzz/FuzzInspect. Run it with
// -fuzzminimizetime 0 (or a few seconds): minimizing the large seed-derived
// inputs otherwise stalls the engine.
//
//	go test -run XXX -fuzz FuzzInspect -fuzztime 5m -fuzzminimizetime 0 ./internal/dump/
func FuzzInspect(f *testing.F) {
	files, _ := filepath.Glob("testdata/fixtures/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := dump.Inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil && !dump.IsFormatError(err) {
			t.Fatalf("not a FormatError: %v", err)
		}
	})
}

// TestHandWrittenSQL: one-line CREATE TABLE statements and INSERTs with
// the column order taken from them, as hand-made dumps have.
func TestHandWrittenSQL(t *testing.T) {
	sql := "-- Dumped from database version 9.6.24\n" +
		"CREATE TABLE ir_module_module (id integer, name varchar(64), latest_version varchar, state varchar(16), summary numeric(4, 2));\n" +
		"CREATE TABLE ir_config_parameter (key text, value text);\n" +
		"INSERT INTO ir_module_module VALUES (1, 'base', '10.0.1.3', 'installed', 1.5);\n" +
		"INSERT INTO ir_config_parameter VALUES ('database.uuid', 'u-1');\n"
	info, err := dump.Inspect(strings.NewReader(sql), int64(len(sql)))
	if err != nil || info.DatabaseVersion != "10.0" || info.DatabaseUUID != "u-1" || info.PostgreSQL != "9.6" {
		t.Fatalf("%+v %v", info, err)
	}
}
