// Package security is the server's security suite: every trick an
// attacker could play with nothing but the public surfaces (the HTTP API,
// the SSH daemons, the uploaded dump) has a regression test here, run
// against a whole server started in-process on a real PostgreSQL.
//
// The package holds no code of its own; its tests are grouped by surface:
// dump_*_test.go (what a dump may not do), archive_test.go (what an archive
// may not reach), sftp_test.go and ssh_test.go (the SSH daemon), params_test.go
// (the HTTP API's inputs), odoo_test.go (Odoo's upgrade script's protocol:
// its JSON-RPC calls and rsync transfers).
package security
