package security_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/upgradetest"
)

// TestPsqlMetaCommands: a plain SQL dump is restored with psql, which
// also obeys backslash commands: run a shell (\!), pipe output to one (\o
// |, \g |, \copy … program), read server files (\copy from, \i, \ir,
// \lo_import), reach the application's database (\c) or steer psql (\set,
// \setenv, \gexec). None may run: each request fails saying a psql
// command was found, and the command's effect never appears. Each trick is
// tried plain, inside gzip, inside an Odoo backup zip and with a CRLF
// line end.
func TestPsqlMetaCommands(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin", Workers: 4})
	base := fixture(t, "odoo12.sql")
	tricks := []struct {
		name string
		sql  func(m string) string
	}{
		{"shell", func(m string) string { return `\! id > ` + m }},
		{"output to a pipe", func(m string) string { return `\o |id > ` + m + "\nSELECT 1;\n\\o" }},
		{"query to a pipe", func(m string) string { return "SELECT 1 \\g |id > " + m }},
		{"copy to a program", func(m string) string { return `\copy (SELECT 1) to program 'id > ` + m + `'` }},
		{"copy from a server file", func(m string) string {
			return `\copy public.res_partner (name) from '/etc/passwd'` + "\n" + `\copy public.res_partner (name) to '` + m + `'`
		}},
		{"include a file", func(m string) string { return `\i /etc/passwd` }},
		{"include a relative file", func(m string) string { return `\ir ../../../../etc/passwd` }},
		{"connect elsewhere", func(m string) string { return `\c postgres` }},
		{"connect, long form", func(m string) string { return `\connect template1` }},
		{"set an environment variable", func(m string) string { return `\setenv PGOPTIONS '-c log_directory=/tmp'` }},
		{"import a large object", func(m string) string { return `\lo_import '/etc/passwd'` }},
		{"execute generated statements", func(m string) string {
			return `SELECT 'COPY (SELECT 1) TO PROGRAM ''id > ` + m + `''' \gexec`
		}},
		{"set a variable", func(m string) string { return `\set ON_ERROR_STOP off` + "\n" + `\set cmd 'id > ` + m + `'` }},
		{"leave restricted mode", func(m string) string { return `\unrestrict 0123456789abcdef` + "\n" + `\! id > ` + m }},
	}
	for _, trick := range tricks {
		for _, wrap := range []struct {
			name     string
			filename string
			make     func(sql []byte) []byte
			eol      string
		}{
			{"plain", "db.sql", func(b []byte) []byte { return b }, "\n"},
			{"gzip", "db.sql.gz", func(b []byte) []byte { return gzipped(t, b) }, "\n"},
			{"odoo zip", "db.zip", func(b []byte) []byte { return odooBackup(t, b) }, "\n"},
			{"crlf", "db.sql", func(b []byte) []byte { return b }, "\r\n"},
		} {
			t.Run(trick.name+"/"+wrap.name, func(t *testing.T) {
				t.Parallel()
				m := marker(t)
				lines := strings.ReplaceAll(trick.sql(m), "\n", wrap.eol) + wrap.eol
				r := c.run(wrap.filename, wrap.make(afterHeader(t, base, lines)))
				assertRefused(t, r, "psql command")
				assertAbsent(t, m)
			})
		}
	}
}

// TestPsqlMetaCommandReportsLine: the reason names the dump's own line
// and the command, so the customer can find it.
func TestPsqlMetaCommandReportsLine(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	sql := afterHeader(t, fixture(t, "odoo12.sql"), "\\! echo hello\n")
	line := strings.Count(string(sql[:strings.Index(string(sql), `\! echo`)]), "\n") + 1
	r := c.run("db.sql", sql)
	assertRefused(t, r, fmt.Sprintf("psql command on line %d (%q)", line, `\! echo hello`))
}

// TestPsqlVariables: psql's own variables (the socket path in HOST among
// them) cannot be read back into the database with :'NAME'.
func TestPsqlVariables(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	for _, v := range []string{"HOST", "PORT", "USER", "DBNAME", "VERSION"} {
		t.Run(v, func(t *testing.T) {
			sql := atEnd(fixture(t, "odoo12.sql"), "INSERT INTO public.res_partner (name) VALUES (:'"+v+"');\n")
			r := c.run("db.sql", sql)
			assertRefused(t, r, "syntax error")
		})
	}
}

// TestAppDatabaseProbe is the probe that found the hole: a dump connects
// to the application's database and raises the other requests' keys into
// its own customer_message. \c is refused, and even a scratch role that
// could reach it would find CONNECT revoked.
func TestAppDatabaseProbe(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	victim := c.create("victim.dump")
	var appDB string
	if err := superConn(t, "").QueryRow(t.Context(), "SELECT current_database()").Scan(&appDB); err != nil {
		t.Fatal(err)
	}
	sql := atEnd(fixture(t, "odoo12.sql"), `\c `+appDB+`
DO $$ BEGIN RAISE EXCEPTION 'keys: %', (SELECT string_agg(id || ':' || key, ' ') FROM requests); END $$;
`)
	r := c.run("db.sql", sql)
	assertRefused(t, r, "psql command")
	if strings.Contains(message(r), victim.Key) {
		t.Fatalf("another request's key leaked: %q", message(r))
	}
	var open bool
	if err := superConn(t, "").QueryRow(t.Context(), "SELECT has_database_privilege('public', current_database(), 'CONNECT')").Scan(&open); err != nil {
		t.Fatal(err)
	}
	if open {
		t.Fatal("every role may still connect to the application database")
	}
}
