// Package sftpd is the embedded SSH/SFTP daemon: one virtual file per
// request, reached as user_<id> with the keys request_sftp_access stored.
//
// While a request is draft its user sees exactly one file, the request's
// shared_file, writable at any offset (OpenSSH's put and put -a); after
// process the file is read-only; once done or delivered the user sees only
// upgraded_<filename>, read-only. Every other operation answers "permission
// denied" and changes nothing. Storage paths come from the request id only.
package sftpd
