package engine

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A scratch database and its role: every run restores into a database of
// its own, owned by a throwaway role of the same name that is no superuser,
// cannot create databases or roles, belongs to no predefined role and,
// CONNECT being revoked from PUBLIC on the scratch database and the
// application's, reaches no other database. The role's password lives in
// memory for the run only; the server gets its SCRAM verifier, never the
// password itself.
type scratchDB struct {
	name     string
	password string
}

// forbiddenRoles are the predefined roles that would let SQL reach the
// host; a scratch role must belong to none (nor to any role at all).
var forbiddenRoles = []string{"pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
	"pg_signal_backend", "pg_read_all_data", "pg_write_all_data", "pg_read_all_settings"}

// createScratch creates the role and the database for one run.
func (e *Engine) createScratch(ctx context.Context, name string) (scratchDB, error) {
	s := scratchDB{name: name, password: randomHex(24)}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return s, fmt.Errorf("create scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id := pgx.Identifier{name}.Sanitize()
	verifier, err := scramVerifier(s.password)
	if err != nil {
		return s, err
	}
	stmts := []string{
		"CREATE ROLE " + id + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" +
			" CONNECTION LIMIT 16 PASSWORD '" + verifier + "'",
	}
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return s, fmt.Errorf("create scratch database: %w", err)
	}
	if !super {
		// CREATE DATABASE … OWNER needs the creator to be a member.
		stmts = append(stmts, "GRANT "+id+" TO CURRENT_USER")
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return s, fmt.Errorf("create scratch role: %w", err)
		}
	}
	if err := checkScratchRole(ctx, conn, name); err != nil {
		return s, err
	}
	for _, q := range []string{
		"CREATE DATABASE " + id + " OWNER " + id + " TEMPLATE template0 ENCODING 'UTF8'",
		"REVOKE ALL ON DATABASE " + id + " FROM PUBLIC",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return s, fmt.Errorf("create scratch database: %w", err)
		}
	}
	if super && e.cfg.MaxRestoreBytes > 0 {
		// temp_file_limit only a superuser sets: the role cannot lift it.
		kb := max(e.cfg.MaxRestoreBytes/1024, 1)
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER ROLE %s SET temp_file_limit = %d", id, kb)); err != nil {
			return s, fmt.Errorf("create scratch role: %w", err)
		}
	}
	return s, nil
}

// checkScratchRole verifies, after creating it, that a scratch role holds
// no privilege that reaches beyond its database.
func checkScratchRole(ctx context.Context, conn *pgx.Conn, name string) error {
	var super, createDB, createRole, repl, bypass bool
	var memberOf []string
	err := conn.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
		ARRAY(SELECT b.rolname::text FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid)
		FROM pg_roles r WHERE rolname = $1`, name).Scan(&super, &createDB, &createRole, &repl, &bypass, &memberOf)
	if err != nil {
		return fmt.Errorf("check scratch role: %w", err)
	}
	var bad []string
	for _, f := range []struct {
		on   bool
		what string
	}{{super, "SUPERUSER"}, {createDB, "CREATEDB"}, {createRole, "CREATEROLE"}, {repl, "REPLICATION"}, {bypass, "BYPASSRLS"}} {
		if f.on {
			bad = append(bad, f.what)
		}
	}
	for _, m := range memberOf {
		bad = append(bad, "member of "+m)
	}
	for _, fr := range forbiddenRoles {
		var has bool
		if err := conn.QueryRow(ctx, `SELECT pg_has_role($1, $2, 'USAGE')`, name, fr).Scan(&has); err == nil && has {
			bad = append(bad, "has "+fr)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("scratch role %s is not unprivileged (%s): refusing to restore with it", name, strings.Join(bad, ", "))
	}
	return nil
}

// dropScratch drops a run's database and role.
func (e *Engine) dropScratch(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, e.prefix()) {
		return fmt.Errorf("refusing to drop %q: not a scratch database", name)
	}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return fmt.Errorf("drop scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop scratch database: %w", err)
	}
	if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+id); err != nil {
		return fmt.Errorf("drop scratch role: %w", err)
	}
	return nil
}

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// a password (RFC 5802, 7677), so the password never reaches the server.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	const iterations = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, 32)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Prepare checks, at start-up, that untrusted work can be confined: the
// scratch server's role can create databases and roles; CONNECT on the
// application database is revoked from PUBLIC (the server revokes it when
// it can, and refuses to start when it cannot); and a scratch database
// and role can be made, reached and dropped. Databases of the scratch
// server that PUBLIC may still connect to are logged as a warning.
func (e *Engine) Prepare(ctx context.Context) error {
	if e.cfg.Kind == Passthrough {
		return nil
	}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return fmt.Errorf("engine: scratch database server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var user string
	var super, createRole, createDB bool
	if err := conn.QueryRow(ctx, `SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user`).
		Scan(&user, &super, &createRole, &createDB); err != nil {
		return fmt.Errorf("engine: scratch database server: %w", err)
	}
	if !super && (!createRole || !createDB) {
		var missing []string
		if !createDB {
			missing = append(missing, "CREATEDB")
		}
		if !createRole {
			missing = append(missing, "CREATEROLE")
		}
		return fmt.Errorf("engine: the role %s lacks %s: each upload is restored into a database of its own, owned by a throwaway unprivileged role, "+
			"which this role must create (ALTER ROLE %s %s), or point UPGRADE_SCRATCH_DATABASE_URL at a server where it can",
			user, strings.Join(missing, " and "), pgx.Identifier{user}.Sanitize(), strings.Join(missing, " "))
	}
	if err := e.checkTools(ctx, conn); err != nil {
		return err
	}
	if err := e.confineAppDatabase(ctx); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template1'
		AND NOT starts_with(datname, $1) AND has_database_privilege('public', oid, 'CONNECT') ORDER BY datname`, ScratchPrefix)
	if err == nil {
		open, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err == nil && len(open) > 0 {
			e.logger.Warn("every role may connect to these databases of the scratch server, scratch roles included; "+
				"revoke CONNECT from PUBLIC on them, or give scratch databases a server of their own (UPGRADE_SCRATCH_DATABASE_URL)",
				"databases", open)
		}
	}
	probe := e.prefix() + "probe_" + randomHex(4)
	s, err := e.createScratch(ctx, probe)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		e.dropScratch(cctx, probe)
	}()
	if err != nil {
		return fmt.Errorf("engine: make a scratch database: %w", err)
	}
	sc, err := e.scratchConn(ctx, s)
	if err != nil {
		return fmt.Errorf("engine: a scratch role cannot reach its own database (check pg_hba.conf of the scratch server): %w", err)
	}
	sc.Close(ctx)
	return nil
}

// checkTools fails when the local pg_dump is older than the scratch
// server (it refuses to dump a newer server, so every request would fail)
// and logs which dumps this installation can restore.
func (e *Engine) checkTools(ctx context.Context, conn *pgx.Conn) error {
	var num int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&num); err != nil {
		return fmt.Errorf("engine: scratch server version: %w", err)
	}
	server := num / 10000
	dumpMajor, err := toolMajor("pg_dump")
	if err != nil {
		return err
	}
	if dumpMajor < server {
		return fmt.Errorf("engine: pg_dump %d cannot dump the scratch server, PostgreSQL %d: install the PostgreSQL %d client tools or newer "+
			"(Debian: apt-get install postgresql-client-%d), or point UPGRADE_SCRATCH_DATABASE_URL at a server of version %d or older",
			dumpMajor, server, server, server, dumpMajor)
	}
	restoreMajor, err := toolMajor("pg_restore")
	if err != nil {
		return err
	}
	e.logger.Info("PostgreSQL client tools", "pg_dump", dumpMajor, "pg_restore", restoreMajor, "scratch_server", server,
		"reads_archives_up_to", maxArchive(restoreMajor))
	return nil
}

// confineAppDatabase revokes CONNECT on the application database from
// PUBLIC when scratch roles live on the same server, so a scratch role
// cannot connect to it.
func (e *Engine) confineAppDatabase(ctx context.Context) error {
	if e.cfg.AppDatabaseURL == "" || !sameServer(e.cfg.AppDatabaseURL, e.cfg.DatabaseURL) {
		return nil
	}
	cfg, err := pgx.ParseConfig(e.cfg.AppDatabaseURL)
	if err != nil {
		return errors.New("engine: the application database URL cannot be parsed")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("engine: application database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return fmt.Errorf("engine: application database: %w", err)
	}
	_, revokeErr := conn.Exec(ctx, "REVOKE CONNECT ON DATABASE "+pgx.Identifier{db}.Sanitize()+" FROM PUBLIC")
	var open bool
	if err := conn.QueryRow(ctx, `SELECT has_database_privilege('public', current_database(), 'CONNECT')`).Scan(&open); err != nil {
		return fmt.Errorf("engine: application database: %w", err)
	}
	if open {
		why := "it is not its owner"
		if revokeErr != nil {
			why = revokeErr.Error()
		}
		return fmt.Errorf("engine: every role may connect to the application database %s, and this role cannot revoke that (%s): "+
			"scratch roles share its server, so run REVOKE CONNECT ON DATABASE %s FROM PUBLIC as its owner (granting CONNECT to the roles that need it), "+
			"or give scratch databases a server of their own (UPGRADE_SCRATCH_DATABASE_URL)", db, why, pgx.Identifier{db}.Sanitize())
	}
	return nil
}

// sameServer reports whether two database URLs reach the same server.
func sameServer(a, b string) bool {
	ca, errA := pgx.ParseConfig(a)
	cb, errB := pgx.ParseConfig(b)
	if errA != nil || errB != nil {
		return true // unknown: act as if they were
	}
	return ca.Host == cb.Host && ca.Port == cb.Port
}
