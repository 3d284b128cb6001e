package engine

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestScrub: customers read tools' messages without the server's paths.
func TestScrub(t *testing.T) {
	admin, _ := pgx.ParseConfig("postgres://u@/db?host=/srv/upgrade/data/postgres-run")
	r := &run{e: &Engine{cfg: Config{DataRoot: "/srv/upgrade/data"}, admin: admin},
		work: &workDir{path: "/srv/upgrade/data/work/upgrade_scratch_x_8_1"}}
	for in, want := range map[string]string{
		`could not open input file "/srv/upgrade/data/work/upgrade_scratch_x_8_1/restore-dir/3446.dat": No such file`: `could not open input file "3446.dat": No such file`,
		`connection to server on socket "/srv/upgrade/data/postgres-run/.s.PGSQL.5432" failed`:                        `connection to server on socket ".s.PGSQL.5432" failed`,
		`could not read "/srv/upgrade/data/requests/8/upload"`:                                                        `could not read "upload"`,
		`could not close data file "restore-dir/3420.dat"`:                                                            `could not close data file "3420.dat"`,
		`ERROR: relation "public.x" does not exist`:                                                                   `ERROR: relation "public.x" does not exist`,
	} {
		if got := r.scrub(in); got != want {
			t.Errorf("scrub(%q) = %q, want %q", in, got, want)
		}
	}
}
