// Package dump recognises uploaded database dumps and reads what the
// Upgrade API reports about them, without PostgreSQL: the layers
// (compressions, outermost first: ["gzip","pgdmp_custom","sql"]), the
// dumped server's major version, the Odoo series of base in
// ir_module_module, database.uuid from ir_config_parameter, and whether an
// Odoo backup carries a filestore.
//
// It reads pg_dump's custom archives (versions 1.12 to 1.16; compression
// none, zlib, lz4 and zstd; with or without TOC offsets), tar archives,
// directory archives (as a zip or tar of the folder), plain SQL (COPY or
// INSERT), gzip around any of them, and Odoo's backup zip (dump.sql,
// manifest.json, filestore/). Damaged or unknown input gives a *FormatError
// whose message a customer can act on; nothing panics and no length read
// from the input is trusted for an allocation.
package dump
