// Package engine runs one upgrade: inspect the upload, restore it into a
// scratch database, upgrade it (built-in SQL, an external command, or
// nothing at all for pass-through), dump it back in the upload's own format
// and write the notes and the modules archive.
//
// Errors a customer can act on are *CustomerError; anything else is
// internal. The engine needs PostgreSQL's client tools (pg_restore,
// pg_dump, psql) on PATH for the built-in and command engines.
package engine
