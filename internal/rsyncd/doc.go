// Package rsyncd serves the rsync-over-SSH transfers of Odoo's upgrade
// client: one SSH endpoint per transfer, on its own port, that runs the
// machine's rsync in server mode confined to one folder, the request's
// /data.
//
// The caller (the JSON-RPC layer) prepares the folder, calls Server.Open on
// transfer/start, hands the client Endpoint.Port and Endpoint.KnownHosts,
// and calls Endpoint.Close on transfer/stop or a terminal state; an
// endpoint without connections closes itself after Config.IdleTimeout.
// Endpoint.Result then says whether the last rsync succeeded.
//
// # What an endpoint accepts
//
// User odoo, with the transfer's key only. Session channels only, with one
// exec request each whose command line is one of the forms the client's
// rsync sends (rsync 3.5.0, the client's command from the reference):
//
//	upload    rsync --server -logDtpre.iLsfxCIvu --delete-after . /data/origin.dump
//	host:port rsync --server -logDtpre.iLsfxCIvu --delete-after . 8443:/data/origin.sql
//	download  rsync --server --sender -logDtpre.LsfxCIvu --ignore-missing-args . /data/upgraded.dump /data/filestore /data/upgrade-report.html /data/upgrade.log
//
// checked word by word by an allow-list (the short-option letters of -a,
// -r and -v, the "e." capability flags, --info, --chmod, --bwlimit,
// --delete-after on uploads, --ignore-missing-args on downloads). An
// upload endpoint runs rsync's receiver only, a download endpoint its
// sender only. Paths are /data/<rel> or <digits>:/data/<rel>, with rel
// clean, relative and not through a symbolic link; rsync runs in the
// folder with the paths made relative to it. Everything else (shells,
// subsystems, other commands and options, port forwarding, agent and X11
// forwarding, ptys) is refused; refused commands get a one-line reason on
// stderr and exit status 1.
//
// # How rsync is confined
//
// rsync runs as Config.Credential, in its own process group (killed when
// the session or the endpoint ends), with its address space bounded (1
// GiB: a hostile file list cannot exhaust the host's memory), with only
// PATH and LC_ALL set, and
// with these options after the client's: uploads get --munge-links
// (uploaded links point under /rsyncd-munged/ and cannot be followed;
// uploads are refused while that folder exists), --drop-D, --no-super and
// --chmod=ug-s; both directions get --confine-root=<folder>, which keeps
// the filter merge files that clients name over the protocol (not on the
// command line) inside the folder. rsync 3.5 or later is required.
//
// rsync's own error messages name the folder by its server path (they
// travel inside the rsync protocol, which the endpoint passes through
// untouched), so the folder's path must not hold a secret such as the
// request's token.
//
// # Connections
//
// At most 16 connections per endpoint and 4 session channels per
// connection. Unauthenticated connections close after Config.LoginGrace;
// the server asks connected clients for a sign of life every
// Config.ClientAlive and drops those silent for four intervals. A new
// rsync on an endpoint kills one still running there (a client that
// re-runs after losing its connection must not wait for the server to
// notice the dead one); the killed one's client is told why.
//
// # What an interrupted upload leaves
//
// rsync writes each file to a temporary ".<name>.XXXXXX" beside it and
// renames it when complete, so a file never shows partly under its own
// name. A client that dies mid-file makes the server's rsync delete its
// temporary; an rsync the server kills (Close, or a newer rsync on the
// same endpoint replacing it) leaves it behind. Files completed before
// the interruption stay, and re-running the same command sends only the
// rest; in a folder upload its --delete-after also removes a temporary
// left there, but one left beside a single file (/data/.origin.sql.XXXXXX)
// stays. Callers must not take a name starting with "." for part of the
// dump.
package rsyncd
