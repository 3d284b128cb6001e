package dump

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestWrittenBy reads the pg_dump version of every fixture kind from its
// header; a file that is no dump says nothing.
func TestWrittenBy(t *testing.T) {
	entries, err := os.ReadDir("testdata/fixtures")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile("testdata/fixtures/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		info, err := Inspect(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		got := WrittenBy(bytes.NewReader(b), int64(len(b)))
		want := Writer{PgDump: info.PgDump, Archive: info.ArchiveVersion}
		if strings.Contains(e.Name(), "odoo-backup") {
			want.Archive = "" // dump.sql inside
		}
		if got != want || got.PgDump == "" {
			t.Errorf("%s: WrittenBy = %+v, Inspect says %+v", e.Name(), got, want)
		}
	}
	for _, junk := range [][]byte{nil, []byte("PGDMP"), []byte("PK\x03\x04garbage"), {0x1f, 0x8b, 0, 0}, []byte("hello")} {
		if got := WrittenBy(bytes.NewReader(junk), int64(len(junk))); got != (Writer{}) {
			t.Errorf("%q: %+v", junk, got)
		}
	}
}
