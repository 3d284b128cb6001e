// Package migrations holds the SQL migrations of the upgrade-server database,
// embedded so the binary applies them at start-up with golang-migrate.
package migrations

import "embed"

// FS holds the NNNNNN_name.{up,down}.sql files.
//
//go:embed *.sql
var FS embed.FS
