package engine

import (
	"strconv"

	"testing"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// TestPgVersionCompatible: a client whose pg_dump is older than the
// archive this server's pg_dump writes cannot restore the result.
func TestPgVersionCompatible(t *testing.T) {
	ours, err := toolMajor("pg_dump")
	if err != nil {
		t.Fatal(err)
	}
	written := archiveWrittenBy(ours)
	for _, tt := range []struct {
		w    dump.Writer
		want bool
	}{
		{dump.Writer{}, true},
		{dump.Writer{PgDump: "18"}, true},
		{dump.Writer{PgDump: "9"}, compareSeries(written, "1.13") <= 0},
		{dump.Writer{PgDump: "16"}, compareSeries(written, "1.15") <= 0},
		{dump.Writer{PgDump: "17", Archive: "1.16"}, true},
		{dump.Writer{Archive: "1.14"}, compareSeries(written, "1.14") <= 0},
		{dump.Writer{PgDump: strconv.Itoa(ours)}, true},
	} {
		if got := PgVersionCompatible(tt.w); got != tt.want {
			t.Errorf("pg_dump %d here, client %+v: %v, want %v", ours, tt.w, got, tt.want)
		}
	}
	// On this machine's tools (15 on the development machine, 17 in the
	// image) a PostgreSQL 12 client is refused only where the archive
	// changed since.
	if ours >= 16 && PgVersionCompatible(dump.Writer{PgDump: "12"}) {
		t.Errorf("pg_dump %d writes %s, which pg_restore 12 cannot read", ours, written)
	}
}
