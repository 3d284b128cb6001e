package dump

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Info is what inspection learned about a dump.
type Info struct {
	// Compressions are the layers, outermost first, always ending in "sql"
	// for a valid dump: ["pgdmp_custom","sql"], ["gzip","sql"], ["zip","sql"].
	Compressions []string
	// Format is the innermost container: "custom", "tar", "directory" or "sql".
	Format string
	// ArchiveVersion is pg_dump's archive version ("1.14"); "" for SQL.
	ArchiveVersion string
	// Compression of a pg_dump archive's data: "none", "gzip", "lz4", "zstd".
	Compression string
	// PostgreSQL is the dumped server's major version: "15", "9.4"; "" if unknown.
	PostgreSQL string
	// PgDump is the major version of the pg_dump that wrote it.
	PgDump string
	// DBName is the dumped database's name, when the dump records it.
	DBName string
	// DatabaseVersion is the Odoo series of base: "16.0", "saas~17.2".
	DatabaseVersion string
	// DatabaseUUID is ir_config_parameter's database.uuid.
	DatabaseUUID string
	// Filestore is true for an Odoo backup that carries filestore/ files.
	Filestore bool
	// Modules maps each installed module to its latest_version.
	Modules map[string]string
	// Neutralized is true when database.is_neutralized is set (a test copy).
	Neutralized bool
	// ManifestVersion is an Odoo backup's manifest.json "version", if any.
	ManifestVersion string
	// ManifestPG is the manifest's pg_version as a major version.
	ManifestPG string
	// DirTOC and DirFiles describe a directory archive (a zip or tar of the
	// folder, or the folder itself: see InspectFS): the member name of its
	// toc.dat, and the names, relative to toc.dat's folder, of every data
	// file toc.dat and blobs.toc name, each a plain file of the archive. A
	// restore extracts these and nothing else.
	DirTOC   string
	DirFiles []string
}

// FormatError says in plain language why a dump cannot be used.
type FormatError struct {
	Reason string
	err    error // a sentinel it matches (ErrTooLarge), if any
}

func (e *FormatError) Error() string { return e.Reason }

// Unwrap returns the sentinel the error matches, if any.
func (e *FormatError) Unwrap() error { return e.err }

func formatErr(format string, args ...any) error {
	return &FormatError{Reason: fmt.Sprintf(format, args...)}
}

// IsFormatError reports whether err is about the input (not about I/O).
func IsFormatError(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe)
}

// majorOf turns "15.18 (Debian 15.18-0+deb12u1)" into "15" and "9.4.26" into "9.4".
func majorOf(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " ("); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) == 0 || parts[0] == "" {
		return ""
	}
	for _, c := range parts[0] {
		if c < '0' || c > '9' {
			return ""
		}
	}
	if len(parts[0]) == 1 && len(parts) > 1 { // 9.6, 8.4: the first two parts
		return parts[0] + "." + parts[1]
	}
	// Pre-release builds: "17beta1" stays as its digits.
	return strings.TrimRightFunc(parts[0], func(r rune) bool { return r < '0' || r > '9' })
}

// seriesOf turns a module version into its Odoo series: "16.0.1.3" -> "16.0",
// "saas~17.2.1.3" -> "saas~17.2".
func seriesOf(v string) string {
	parts := strings.Split(strings.TrimSpace(v), ".")
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return ""
	}
	return parts[0] + "." + parts[1]
}

// tables collects the rows inspection needs.
type tables struct {
	budget      *budget
	modules     map[string]moduleRow
	uuid        string
	neutralized bool
}

type moduleRow struct{ version, state string }

func (t *tables) module(name, version, state string) {
	if t.modules == nil {
		t.modules = map[string]moduleRow{}
	}
	t.modules[name] = moduleRow{version, state}
}

// finish fills the Odoo facts of info from the rows read.
func (t *tables) finish(info *Info) {
	info.DatabaseUUID = t.uuid
	info.Neutralized = t.neutralized
	if len(t.modules) == 0 {
		return
	}
	info.Modules = map[string]string{}
	counts := map[string]int{}
	for name, m := range t.modules {
		if m.state == "installed" || m.state == "to upgrade" || m.state == "to remove" {
			info.Modules[name] = m.version
			if s := seriesOf(m.version); s != "" {
				counts[s]++
			}
		}
	}
	if b, ok := t.modules["base"]; ok && seriesOf(b.version) != "" {
		info.DatabaseVersion = seriesOf(b.version)
		return
	}
	// No readable base: the most common series among installed modules.
	var best []string
	for s := range counts {
		best = append(best, s)
	}
	sort.Slice(best, func(i, j int) bool {
		if counts[best[i]] != counts[best[j]] {
			return counts[best[i]] > counts[best[j]]
		}
		return best[i] < best[j]
	})
	if len(best) > 0 {
		info.DatabaseVersion = best[0]
	}
}

// rowSink receives one table's rows as column name -> value (nil for NULL).
type rowSink func(row map[string]*string)

// sinkFor returns how to keep the rows of table, or nil to skip it.
func (t *tables) sinkFor(table string) rowSink {
	switch unqualified(table) {
	case "ir_module_module":
		return func(row map[string]*string) {
			name, state := deref(row["name"]), deref(row["state"])
			version := deref(row["latest_version"])
			if version == "" {
				version = deref(row["db_version"])
			}
			if name != "" {
				t.module(name, version, state)
			}
		}
	case "ir_config_parameter":
		return func(row map[string]*string) {
			switch deref(row["key"]) {
			case "database.uuid":
				t.uuid = deref(row["value"])
			case "database.is_neutralized":
				t.neutralized = deref(row["value"]) == "True" || deref(row["value"]) == "true"
			}
		}
	}
	return nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// unqualified drops a schema and quotes: public."ir_module_module" -> ir_module_module.
func unqualified(name string) string {
	name = strings.TrimSpace(name)
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	return strings.Trim(name, `"`)
}
