package app

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		dsn, pw string
	}{
		{"postgres://u:S3cr3t@h:5432/db", "S3cr3t"},
		{"postgresql://u:p%40ss%2Fw@h/db", "p@ss/w"},
		{"postgres://u@h/db?sslmode=disable&password=S3cr3t", "S3cr3t"},
		{"postgres://u@h/db?password=p%26w%20x", "p&w x"},
		{"host=h password=S3cr3t dbname=d", "S3cr3t"},
		{"host=h password = 'a s3cr\\'t' dbname=d", "a s3cr't"},
		{"host=h sslpassword=K3yPass dbname=d", "K3yPass"},
		{"postgres://u:S3cr3t@h:notaport/db", "S3cr3t"},
	} {
		secrets := dsnSecrets(tt.dsn)
		if len(secrets) == 0 {
			t.Errorf("%s: no secret found", tt.dsn)
			continue
		}
		for _, msg := range []string{
			tt.dsn,
			fmt.Sprintf("parse %q: invalid port", tt.dsn),
			"connect to postgres://u:" + tt.pw + "@h/db failed",
			"cannot parse `" + strings.ReplaceAll(tt.dsn, "'", "") + "`",
		} {
			got := redact(msg, secrets)
			for _, sec := range secrets {
				if strings.Contains(got, sec) {
					t.Errorf("redact(%q) = %q still holds %q", msg, got, sec)
				}
			}
		}
	}
	// A password that is also a common word is not hunted down elsewhere.
	if got := redact("upgrade-server started", dsnSecrets("postgres://upgrade:upgrade@db/upgrade")); got != "upgrade-server started" {
		t.Errorf("redact changed a line without a connection string: %q", got)
	}
	if got := redact("dial postgres://upgrade:upgrade@db/upgrade", dsnSecrets("postgres://upgrade:upgrade@db/upgrade")); got != "dial postgres://upgrade:xxxxx@db/upgrade" {
		t.Errorf("redact = %q", got)
	}
}

func TestRedactLogsAndErrors(t *testing.T) {
	t.Parallel()
	secrets := dsnSecrets("host=h password=S3cr3t")
	var buf bytes.Buffer
	logger := redactLogs(slog.New(slog.NewJSONHandler(&buf, nil)), secrets)
	base := errors.New("dial host=h password=S3cr3t: refused")
	logger.With("dsn", "host=h password=S3cr3t").Error("connect password=S3cr3t", "err", base,
		slog.Group("db", "url", "postgres://u:S3cr3t@h/db"), "any", []string{"password=S3cr3t"})
	if strings.Contains(buf.String(), "S3cr3t") || !strings.Contains(buf.String(), "xxxxx") {
		t.Fatalf("log line: %s", buf.String())
	}
	err := redactErr(fmt.Errorf("start: %w", base), secrets)
	if strings.Contains(err.Error(), "S3cr3t") || !errors.Is(err, base) {
		t.Fatalf("error %q (is base: %v)", err, errors.Is(err, base))
	}
}
