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
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // time zone names for create's timezone, whatever the host has

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/pgembed"
	"github.com/upgrade-server/upgrade-server/internal/sftpd"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/worker"
	"github.com/upgrade-server/upgrade-server/migrations"
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
// after a graceful shutdown. Once listening it prints
// "upgrade-server: http listening on <url>" to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: logLevels[cfg.LogLevel]}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(handler)

	contractValid, nContracts, err := contractChecker(cfg.Contracts)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	data := datadir.New(dataDir)
	if err := data.Init(); err != nil {
		return err
	}

	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		cluster, err := pgembed.Start(startCtx, pgembed.Options{Dir: filepath.Join(dataDir, "postgres"), Logger: logger})
		cancel()
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := cluster.Close(stopCtx); err != nil {
				logger.Error("stop embedded PostgreSQL", "err", err)
			}
		}()
		dbURL = cluster.URL("")
	}
	if err := store.Migrate(ctx, dbURL, migrations.FS); err != nil {
		return fmt.Errorf("database %s: %w", redactURL(dbURL), err)
	}
	poolCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", errors.New("cannot parse it"))
	}
	poolCfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("database %s: %w", redactURL(dbURL), err)
	}
	defer pool.Close()
	st := store.New(pool)
	met := metrics.New(st.QueueDepth)

	hostKeys, err := sftpd.LoadHostKeys(filepath.Join(dataDir, "ssh"))
	if err != nil {
		return err
	}
	fingerprints := sftpd.Fingerprints(hostKeys)
	sftpSrv, err := sftpd.New(logger, st, sftpd.Config{HostSigners: hostKeys, Data: data, IdleTimeout: cfg.SFTPIdleTimeout,
		Ciphers: cfg.SFTPCiphers, Metrics: met})
	if err != nil {
		return err
	}

	eng, err := engine.New(logger, engine.Config{Kind: cfg.Engine, DatabaseURL: dbURL, Targets: cfg.Targets,
		ScriptsDir: cfg.ScriptsDir, Command: cfg.EngineCommand, CommandTimeout: cfg.EngineTimeout, Data: data,
		MockDuration: cfg.MockDuration})
	if err != nil {
		return err
	}
	wrk := worker.New(logger, st, eng, worker.Config{Slots: cfg.Workers, SoftStop: cfg.ShutdownTimeout,
		MockDuration: cfg.MockDuration, FixedEstimate: cfg.Engine == engine.Passthrough, Metrics: met})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	sshLn, err := net.Listen("tcp", cfg.SFTPAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("sftp: %w", err)
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = derivePublicURL(ln.Addr())
	}
	sftpHost := cfg.SFTPPublicHost
	if sftpHost == "" {
		u, _ := url.Parse(publicURL)
		sftpHost = u.Hostname()
	}

	api := httpapi.NewHandler(logger, st, httpapi.Options{
		PublicURL:         publicURL,
		Region:            cfg.Region,
		Targets:           cfg.Targets,
		ContractValidFunc: contractValid,
		MaxUploadBytes:    cfg.MaxUploadBytes,
		NoUploadSync:      !cfg.UploadFsync,
		SFTPHost:          sftpHost,
		SFTPPort:          cfg.SFTPPublicPort,
		SFTPHostKeys:      fingerprints,
		SFTPAccessTTL:     cfg.SFTPAccessTTL,
		Data:              data,
		SQLStreamFunc:     engine.OpenSQL,
		AdminToken:        cfg.AdminToken,
		AdminStore:        st,
		Metrics:           met,
	})
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelWarn),
	}
	logger.Info("upgrade-server started", "http_addr", ln.Addr().String(), "public_url", publicURL,
		"data_dir", dataDir, "embedded_db", cfg.DatabaseURL == "", "targets", len(cfg.Targets),
		"contracts", nContracts, "max_upload_bytes", cfg.MaxUploadBytes)
	logger.Info("sftp daemon started", "sftp_addr", sshLn.Addr().String(), "advertised", fmt.Sprintf("%s:%d", sftpHost, cfg.SFTPPublicPort),
		"host_keys", fingerprints)
	fmt.Fprintf(stdout, "upgrade-server: http listening on http://%s\n", ln.Addr())
	fmt.Fprintf(stdout, "upgrade-server: sftp listening on %s\n", sshLn.Addr())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	if cfg.Workers > 0 {
		g.Go(func() error { return wrk.Run(gctx) })
	}
	g.Go(func() error {
		if err := sftpSrv.Serve(sshLn); err != nil && !errors.Is(err, sftpd.ErrServerClosed) {
			return fmt.Errorf("sftp: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down; waiting for running uploads", "timeout", cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sftpSrv.Shutdown(sctx); err != nil {
				logger.Warn("sftp shutdown timed out; closing the remaining sessions", "err", err)
				sftpSrv.Close()
			}
		}()
		if err := srv.Shutdown(sctx); err != nil {
			logger.Warn("shutdown timed out; closing the remaining connections", "err", err)
			srv.Close()
		}
		wg.Wait()
		return nil
	})
	return g.Wait()
}

// redactURL drops the password of a database URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
