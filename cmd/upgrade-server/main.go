// Command upgrade-server serves Odoo's Upgrade API v1 over HTTP, backed by
// PostgreSQL (its own embedded cluster unless a database URL is given).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	_ "time/tzdata" // time zone names for create's timezone, whatever the host has

	"github.com/upgrade-server/upgrade-server/internal/app"
)

func main() {
	do := run
	if len(os.Args) > 1 && os.Args[1] == "admin" {
		do = runAdmin
	}
	if err := do(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "upgrade-server:", err)
		os.Exit(1)
	}
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// run is the whole program; it returns when ctx ends or on SIGINT/SIGTERM,
// after a graceful shutdown. Once listening it prints to stdout
// "upgrade-server: http listening on <url>" (a URL a person can open:
// localhost for a wildcard address) and "upgrade-server: sftp listening on
// <host:port>" (or "… off"), then, with HTTPS on, "upgrade-server: https
// listening on <url> (…)" with what Odoo's upgrade client needs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, "upgrade-server", version())
		return nil
	}
	if err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: logLevels[cfg.LogLevel]}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(handler)

	return app.Serve(ctx, cfg.Config, logger, func(a app.Addrs) {
		if a.HTTP != nil {
			fmt.Fprintf(stdout, "upgrade-server: http listening on %s\n", a.LocalURL)
		} else {
			fmt.Fprintln(stdout, "upgrade-server: http off")
		}
		if a.SFTP != nil {
			fmt.Fprintf(stdout, "upgrade-server: sftp listening on %s\n", a.LocalSFTP)
		} else {
			fmt.Fprintln(stdout, "upgrade-server: sftp off")
		}
		if a.HTTPS != nil {
			fmt.Fprintf(stdout, "upgrade-server: https listening on %s (Odoo's upgrade script: UPGRADE_SERVER_NAME=https://%s SSL_CERT_FILE=%s)\n",
				strings.Replace(app.LocalURL(a.HTTPS), "http://", "https://", 1), a.HostURI, a.CertPath)
		}
	})
}

// version is the module version this binary was built from ("v1.2.3"), or
// "devel" for a build from a checkout (go run, go build), with the commit
// when the build recorded it.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev != "" {
		v += " (" + rev[:min(12, len(rev))] + modified + ")"
	}
	return v + " " + info.GoVersion
}
