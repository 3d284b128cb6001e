package main

import (
	"context"
	"strings"
	"testing"
)

// TestDatabasePasswordNeverPrinted: a start-up that fails on an
// unreachable or unreadable database prints no password, whichever form
// the URL gives it in.
func TestDatabasePasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	const pw = "Pw-7f3a9c"
	for _, tc := range []struct{ name, dsn string }{
		{"userinfo", "postgres://u:" + pw + "@127.0.0.1:1/db?sslmode=disable"},
		{"query", "postgres://u@127.0.0.1:1/db?sslmode=disable&password=" + pw},
		{"key=value", "host=127.0.0.1 port=1 user=u password=" + pw + " dbname=d sslmode=disable"},
		{"key=value quoted", "host=127.0.0.1 port=1 user=u password='" + pw + "' dbname=d sslmode=disable"},
		{"bad port", "postgres://u:" + pw + "@127.0.0.1:notaport/db"},
		{"bad URL", "postgres://u:" + pw + "@[::1/db"},
		{"bad key=value", "host=127.0.0.1 port=nope password=" + pw},
	} {
		dsn := tc.dsn
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stderr := &syncBuffer{}
			env := map[string]string{"UPGRADE_DATABASE_URL": dsn, "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
				"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_HTTPS_ADDR": "off", "UPGRADE_DATA_DIR": t.TempDir(), "UPGRADE_LOG_LEVEL": "debug"}
			err := run(context.Background(), []string{"upgrade-server"}, func(k string) string { return env[k] }, &syncBuffer{}, stderr)
			if err == nil {
				t.Fatal("the server started on an unreachable database")
			}
			printed := "upgrade-server: " + err.Error() + "\n" + stderr.String() // what main prints
			if strings.Contains(printed, pw) {
				t.Fatalf("the password is printed:\n%s", printed)
			}
			if !strings.Contains(printed, "database") {
				t.Fatalf("the error does not say the database is the trouble:\n%s", printed)
			}
		})
	}
}
