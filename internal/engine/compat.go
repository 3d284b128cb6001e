package engine

import (
	"strconv"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// PgVersionCompatible says whether the client whose pg_dump wrote an
// upload (w, from dump.WrittenBy) can restore the upgraded dump this
// server's pg_dump writes: a client's pg_restore is its pg_dump's version
// and reads archives up to its own. A client that did not say (w zero) is
// taken as compatible; so is anything when this pg_dump cannot be run.
func PgVersionCompatible(w dump.Writer) bool {
	ours, err := toolMajor("pg_dump")
	if err != nil {
		return true
	}
	written := archiveWrittenBy(ours)
	readable := w.Archive
	if m, err := strconv.Atoi(w.PgDump); err == nil {
		readable = maxArchive(m)
	}
	if written == "" || readable == "" {
		return true
	}
	return compareSeries(written, readable) <= 0
}

// archiveWrittenBy is the archive version pg_dump of a major version
// writes ("" when this table does not know it).
func archiveWrittenBy(major int) string {
	return archiveForPG[major]
}
