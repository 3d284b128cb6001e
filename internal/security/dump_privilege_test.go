package security_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/upgradetest"
)

// evilFn defines a function that runs a program on the database server
// (COPY … TO PROGRAM, what only a superuser or pg_execute_server_program
// may do) and returns its argument. It stays quiet while a superuser runs
// it, as on the attacker's own server while the dump is made.
func evilFn(m string) string {
	return "CREATE FUNCTION public.evil(x text) RETURNS text LANGUAGE plpgsql AS $f$\n" +
		"BEGIN\n" +
		"  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN\n" +
		"    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id > " + m + "''';\n" +
		"  END IF;\n" +
		"  RETURN x;\n" +
		"END $f$;\n"
}

// peekFn reads a server file, quietly for a superuser; IMMUTABLE, so an
// index may use it.
const peekFn = `CREATE FUNCTION public.peek(x text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN RETURN x; END IF;
  RETURN x || pg_read_file('/etc/hostname');
END $f$;
`

// TestDumpPrivileges: whatever SQL a dump holds runs as a throwaway role
// that can reach nothing beyond its own scratch database. Each trick
// fails the request (with the database's reason) and has no effect.
func TestDumpPrivileges(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin", Workers: 4})
	base := fixture(t, "odoo12.sql")
	viewOfEvil := "CREATE MATERIALIZED VIEW public.mv AS SELECT public.evil(name::text) FROM public.res_partner;"
	tricks := []struct {
		name string
		// sql is appended to the plain dump, or run before pg_dump when
		// format is set (the object then comes back as pg_dump orders it).
		sql    func(m string) string
		format string
		want   string
	}{
		{"copy to program in a function of a materialized view", func(m string) string { return evilFn(m) + viewOfEvil },
			"c", "pg_execute_server_program"},
		{"copy to program in a materialized view, directory format", func(m string) string { return evilFn(m) + viewOfEvil },
			"d", "pg_execute_server_program"},
		{"copy to program in a materialized view, tar format", func(m string) string { return evilFn(m) + viewOfEvil },
			"t", "pg_execute_server_program"},
		{"copy from program in a column default", func(m string) string {
			return "CREATE FUNCTION public.sneak() RETURNS text LANGUAGE plpgsql AS $f$\n" +
				"BEGIN CREATE TEMP TABLE o (l text); COPY o FROM PROGRAM 'id > " + m + "'; RETURN 'x'; END $f$;\n" +
				"CREATE TABLE public.t (x text DEFAULT public.sneak(), y int);\n" +
				"INSERT INTO public.t (y) VALUES (1);"
		}, "", "pg_execute_server_program"},
		{"read a file in an index expression", func(m string) string {
			return peekFn + "CREATE INDEX evil_idx ON public.res_partner (public.peek(name));"
		}, "c", "permission denied for function pg_read_file"},
		{"copy to program in a trigger that fires during the restore", func(m string) string {
			return evilFn(m) + "CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS $f$\n" +
				"BEGIN PERFORM public.evil('x'); RETURN NEW; END $f$;\n" +
				"CREATE TRIGGER evil BEFORE INSERT ON public.res_partner FOR EACH ROW EXECUTE FUNCTION public.trg();\n" +
				"INSERT INTO public.res_partner (name) VALUES ('x');"
		}, "", "pg_execute_server_program"},
		{"read a server file into a table", func(m string) string {
			return "INSERT INTO public.res_partner (name) SELECT pg_read_file('/etc/hostname');"
		}, "", "permission denied for function pg_read_file"},
		{"read a server file in a materialized view", func(m string) string {
			return "CREATE FUNCTION public.host() RETURNS text LANGUAGE plpgsql AS $f$ BEGIN\n" +
				"IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN RETURN ''; END IF;\n" +
				"RETURN pg_read_file('/etc/hostname'); END $f$;\n" +
				"CREATE MATERIALIZED VIEW public.leak AS SELECT public.host() AS h;"
		}, "c", "permission denied for function pg_read_file"},
		{"import a server file as a large object", func(m string) string {
			return "SELECT lo_import('/etc/passwd');"
		}, "", "permission denied for function lo_import"},
		{"copy from a server file", func(m string) string {
			return "COPY public.res_partner (name) FROM '/etc/passwd';"
		}, "", "pg_read_server_files"},
		{"copy to a server file", func(m string) string {
			return "COPY (SELECT 1) TO '" + m + "';"
		}, "", "pg_write_server_files"},
		{"dblink", func(m string) string { return "CREATE EXTENSION dblink;" }, "", "permission denied to create extension"},
		{"postgres_fdw", func(m string) string { return "CREATE EXTENSION postgres_fdw;" }, "", "permission denied to create extension"},
		{"untrusted language", func(m string) string { return "CREATE EXTENSION plperlu;" }, "", "extension"},
		{"alter system", func(m string) string {
			// COMMIT leaves psql's single transaction, which ALTER SYSTEM refuses.
			return "COMMIT;\nALTER SYSTEM SET application_name = '" + filepath.Base(m) + "';"
		}, "", "permission denied to set parameter"},
		{"create a superuser role", func(m string) string {
			return "CREATE ROLE " + roleName(m) + " SUPERUSER LOGIN;"
		}, "", "must be superuser"},
		{"create a role", func(m string) string { return "CREATE ROLE " + roleName(m) + " LOGIN;" }, "", "permission denied to create role"},
		{"become the superuser", func(m string) string { return "SET ROLE postgres;" }, "", "permission denied to set role"},
		{"grant itself a predefined role", func(m string) string {
			return "DO $$ BEGIN EXECUTE 'GRANT pg_execute_server_program TO ' || quote_ident(current_user); END $$;"
		}, "", "admin option"},
		{"alter its own role", func(m string) string { return "ALTER ROLE CURRENT_USER SUPERUSER;" }, "", "must be superuser"},
		{"set a superuser setting", func(m string) string { return "SET session_preload_libraries = 'plpgsql';" }, "",
			"permission denied to set parameter"},
	}
	for _, tr := range tricks {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			m := marker(t)
			sql := "SET search_path = public, pg_catalog;\n" + tr.sql(m)
			var dumpBytes []byte
			filename := "db.sql"
			switch tr.format {
			case "":
				// What a plain dump appends runs after its data.
				dumpBytes = atEnd(base, sql+"\n")
			case "d":
				dumpBytes, filename = pgDumpOf(t, sql, tr.format), "db.zip"
			default:
				dumpBytes, filename = pgDumpOf(t, sql, tr.format), "db.dump"
			}
			assertAbsent(t, m) // making the dump as the superuser did not run it
			r := c.run(filename, dumpBytes)
			assertRefused(t, r, tr.want)
			assertAbsent(t, m)
			var roles, settings int
			su := superConn(t, "")
			su.QueryRow(t.Context(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", roleName(m)).Scan(&roles)
			su.QueryRow(t.Context(), "SELECT count(*) FROM pg_file_settings WHERE name = 'application_name' AND setting = $1",
				filepath.Base(m)).Scan(&settings)
			if roles != 0 || settings != 0 {
				t.Fatalf("the dump left a role (%d) or a server setting (%d)", roles, settings)
			}
		})
	}
}

func roleName(m string) string {
	return "evil_" + strings.TrimPrefix(filepath.Base(m), "upgrade-security-")
}

// TestEngineTriggers: a trigger the dump leaves on ir_module_module or
// ir_cron fires when the builtin engine updates those tables; it runs as
// the scratch role, so its attempt to escalate fails, and so does the
// request.
func TestEngineTriggers(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	for _, table := range []string{"ir_module_module", "ir_cron"} {
		t.Run(table, func(t *testing.T) {
			m := marker(t)
			sql := atEnd(fixture(t, "odoo12.sql"), "CREATE FUNCTION public.esc() RETURNS trigger LANGUAGE plpgsql AS $f$\n"+
				"BEGIN\n"+
				"  BEGIN EXECUTE 'ALTER ROLE ' || quote_ident(current_user) || ' SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;\n"+
				"  EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id > "+m+"''';\n"+
				"  RETURN NEW;\n"+
				"END $f$;\n"+
				"CREATE TRIGGER esc BEFORE UPDATE ON public."+table+" FOR EACH ROW EXECUTE FUNCTION public.esc();\n")
			r := c.run("db.sql", sql)
			assertRefused(t, r, "pg_execute_server_program")
			assertAbsent(t, m)
		})
	}
}

// TestTrustedExtensions: the extensions Odoo databases create (pg_trgm,
// unaccent) are trusted, so the scratch role may still create them.
func TestTrustedExtensions(t *testing.T) {
	c := newClient(t, upgradetest.Options{Engine: "builtin"})
	sql := afterHeader(t, fixture(t, "odoo12.sql"), "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;\nCREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;\n")
	r := c.run("db.sql", sql)
	if r.State != "done" {
		t.Fatalf("state %s: %s", r.State, message(r))
	}
	for _, format := range []string{"c", "d"} {
		dump := pgDumpOf(t, "SET search_path = public; CREATE EXTENSION pg_trgm; CREATE EXTENSION unaccent; CREATE INDEX p_trgm ON public.res_partner USING gin (name public.gin_trgm_ops);", format)
		name := "db.dump"
		if format == "d" {
			name = "db.zip"
		}
		if r := c.run(name, dump); r.State != "done" {
			t.Fatalf("format %s: state %s: %s", format, r.State, message(r))
		}
	}
}

// TestCommandEngineConfinement: the command engine (an operator's upgrade
// tool, which may run code the database holds) gets the scratch role, not
// the server's: it is no superuser, cannot reach the application's
// database, runs as an unprivileged OS user when the server is root, and
// sees none of the server's secrets.
func TestCommandEngineConfinement(t *testing.T) {
	secret := make([]byte, 8)
	rand.Read(secret)
	t.Setenv("UPGRADE_ADMIN_TOKEN", "admin-"+hex.EncodeToString(secret))
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-"+hex.EncodeToString(secret))
	var appDB string
	if err := superConn(t, "").QueryRow(t.Context(), "SELECT current_database()").Scan(&appDB); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, upgradetest.Options{Engine: "command", EngineCommand: `echo "uid=$(id -u)"
env | sort
psql -X -At -c "SELECT 'super=' || rolsuper FROM pg_roles WHERE rolname = current_user"
if psql -X -At -d '` + appDB + `' -c 'SELECT 1' >/dev/null 2>&1; then echo APP-DB-REACHED; else echo APP-DB-REFUSED; fi
`})
	r := c.run("db.dump", fixture(t, "odoo12.custom.dump"))
	if r.State != "done" {
		t.Fatalf("state %s: %s", r.State, message(r))
	}
	log := strings.Join(c.events(r.ID), "\n")
	for _, want := range []string{"super=false", "APP-DB-REFUSED", "PGUSER=upgrade_scratch_"} {
		if !strings.Contains(log, want) {
			t.Errorf("the command's output lacks %q:\n%s", want, log)
		}
	}
	bad := []string{hex.EncodeToString(secret), "APP-DB-REACHED", "UPGRADE_DATABASE_URL"}
	if os.Geteuid() == 0 {
		bad = append(bad, "uid=0\n")
	}
	for _, b := range bad {
		if strings.Contains(log, b) {
			t.Errorf("the command's output holds %q:\n%s", b, log)
		}
	}
}
