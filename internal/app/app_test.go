package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

func TestDerivePublicURL(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:8080": "http://localhost:8080", "[::]:8080": "http://localhost:8080",
		"127.0.0.1:9": "http://127.0.0.1:9", "[::1]:80": "http://[::1]:80", "192.0.2.7:8080": "http://192.0.2.7:8080",
	} {
		if got := derivePublicURL(fakeAddr(addr)); got != want {
			t.Errorf("derivePublicURL(%s) = %s, want %s", addr, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

func TestContracts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contracts")
	os.WriteFile(path, []byte("# valid contracts\nM1\n\n M2 \n"), 0o600)
	for _, spec := range []string{"M1,M2", "@" + path} {
		valid, n, err := contractChecker(spec)
		if err != nil || n != 2 || !valid("M1") || !valid("M2") || valid("M3") {
			t.Errorf("%s: n=%d err=%v", spec, n, err)
		}
	}
	if valid, _, err := contractChecker(""); valid != nil || err != nil {
		t.Error("unset contracts must accept any")
	}
	if _, _, err := contractChecker("@/nonexistent"); err == nil {
		t.Error("a missing contracts file must fail")
	}
}

// TestScratchRoleChecks: the server refuses to start workers, naming what
// is missing, when its database role cannot make the throwaway roles that
// restores run as, or when every role may connect to its database and it
// cannot revoke that.
func TestScratchRoleChecks(t *testing.T) {
	base := pgtest.BaseURL(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 4)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	// The database is named like the role: the embedded cluster lets a
	// password role into the database of its own name only.
	role := "limited_" + suffix
	db := role
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN PASSWORD 'pw-" + suffix + "' CREATEDB",
		"CREATE DATABASE " + db, // owned by the superuser: CONNECT stays granted to PUBLIC
		"GRANT CREATE ON DATABASE " + db + " TO " + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		admin.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})
	as := func(searchPath bool) string {
		cfg, err := pgx.ParseConfig(base)
		if err != nil {
			t.Fatal(err)
		}
		host := cfg.Host
		u := url.URL{Scheme: "postgres", User: url.UserPassword(role, "pw-"+suffix), Path: "/" + db}
		q := url.Values{"sslmode": {"disable"}}
		if strings.HasPrefix(host, "/") {
			q.Set("host", host)
		} else {
			u.Host = fmt.Sprintf("%s:%d", host, cfg.Port)
		}
		if searchPath {
			q.Set("search_path", "s")
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	conn, err := pgx.Connect(ctx, as(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA s"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	serve := func() error {
		cfg := Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: t.TempDir(),
			DatabaseURL: as(true), Targets: []string{"16.0"}, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
			SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: time.Second, Workers: 1,
			Engine: "builtin", EngineTimeout: time.Hour}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return Serve(ctx, cfg, slog.New(slog.DiscardHandler), func(Addrs) { cancel() })
	}
	if err := serve(); err == nil || !strings.Contains(err.Error(), "lacks CREATEROLE") || strings.Contains(err.Error(), "pw-"+suffix) {
		t.Fatalf("without CREATEROLE: %v", err)
	}
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" CREATEROLE"); err != nil {
		t.Fatal(err)
	}
	if err := serve(); err == nil || !strings.Contains(err.Error(), `REVOKE CONNECT ON DATABASE "`+db+`" FROM PUBLIC`) {
		t.Fatalf("with CONNECT granted to PUBLIC: %v", err)
	}
	if _, err := admin.Exec(ctx, "REVOKE CONNECT ON DATABASE "+db+" FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "GRANT CONNECT ON DATABASE "+db+" TO "+role); err != nil {
		t.Fatal(err)
	}
	if err := serve(); err != nil {
		t.Fatalf("with both: %v", err)
	}
}
