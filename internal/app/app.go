// Package app wires upgrade-server together: data directory, database
// (embedded or given), store, HTTP API, SFTP daemon and workers, and runs
// them until its context ends. cmd/upgrade-server and upgradetest use it.
package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/pgembed"
	"github.com/upgrade-server/upgrade-server/internal/sftpd"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/web"
	"github.com/upgrade-server/upgrade-server/internal/worker"
	"github.com/upgrade-server/upgrade-server/migrations"
)

// Config is the whole configuration, from flags and UPGRADE_* variables
// (a flag wins over its variable, which wins over the default).
type Config struct {
	HTTPAddr    string
	PublicURL   string
	Region      string
	DataDir     string
	DatabaseURL string
	// ScratchDatabaseURL is where scratch databases are made ("": the
	// application's server).
	ScratchDatabaseURL string
	// Storage is where request files go: file:///path or s3://bucket/prefix
	// ("": <DataDir>/requests); S3 reaches an object store.
	Storage   string
	S3        files.S3Config
	Targets   []string
	Contracts string
	// ContractValidFunc, when set, decides contracts instead of Contracts.
	ContractValidFunc func(contract string) bool
	MaxUploadBytes    int64
	UploadFsync       bool
	SFTPAddr          string
	SFTPIdleTimeout   time.Duration
	SFTPCiphers       []string
	SFTPPublicHost    string
	SFTPPublicPort    int
	SFTPAccessTTL     time.Duration
	// SSHLoginGrace, SSHMaxStartups and SSHMaxStartupsPerAddress bound the
	// connections that have not authenticated (sftpd.Config; zero: defaults).
	SSHLoginGrace            time.Duration
	SSHMaxStartups           int
	SSHMaxStartupsPerAddress int
	ShutdownTimeout          time.Duration
	Workers                  int
	Engine                   string
	EngineCommand            string
	EngineTimeout            time.Duration
	ToolsUser                string
	MaxRestoreBytes          int64
	ScriptsDir               string
	MockDuration             time.Duration
	AdminToken               string
	LogFormat                string
	LogLevel                 string
}

// Addrs are where a running server listens.
type Addrs struct {
	HTTP, SFTP net.Addr
	PublicURL  string
	// LocalURL is the HTTP address as a URL a person on this machine can
	// open (http://localhost:8080 for a wildcard [::]:8080), and LocalSFTP
	// the SFTP address likewise (localhost:2200).
	LocalURL, LocalSFTP string
}

// Serve runs the server until ctx ends, then shuts it down gracefully.
// ready, if set, is called once both listeners are bound. Neither its error
// nor any log line holds the database password, in whatever form the URL
// gives it.
func Serve(ctx context.Context, cfg Config, logger *slog.Logger, ready func(Addrs)) (err error) {
	secrets := dsnSecrets(cfg.DatabaseURL)
	if cfg.S3.SecretKey != "" {
		secrets = append(secrets, cfg.S3.SecretKey)
	}
	logger = redactLogs(logger, secrets)
	defer func() { err = redactErr(err, secrets) }()
	return serve(ctx, cfg, logger, ready)
}

func serve(ctx context.Context, cfg Config, logger *slog.Logger, ready func(Addrs)) error {
	secrets := dsnSecrets(cfg.DatabaseURL)
	if cfg.S3.SecretKey != "" {
		secrets = append(secrets, cfg.S3.SecretKey)
	}
	contractValid, nContracts, err := contractChecker(cfg.Contracts)
	if err != nil {
		return err
	}
	if cfg.ContractValidFunc != nil {
		contractValid = cfg.ContractValidFunc
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	// Traversable by other users (0711), so an embedded PostgreSQL running
	// as its own user reaches <data>/postgres, and the tools user its work
	// folder; what is inside stays private.
	if err := os.MkdirAll(dataDir, 0o711); err != nil {
		return err
	}
	workDir := filepath.Join(dataDir, "work")
	if err := os.MkdirAll(workDir, 0o711); err != nil {
		return err
	}
	fstore, err := files.Open(ctx, logger, files.Config{URL: cfg.Storage, Local: dataDir, Fsync: cfg.UploadFsync, S3: cfg.S3})
	if err != nil {
		return err
	}
	logger.Info("request files", "store", fstore.Describe())

	dbURL := cfg.DatabaseURL
	var reserved []uint32 // OS users the tools must not run as
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
		if uid := cluster.UID(); uid >= 0 {
			reserved = append(reserved, uint32(uid))
		}
	}
	if err := store.Migrate(ctx, dbURL, migrations.FS); err != nil {
		return fmt.Errorf("database %s: %w", redact(dbURL, secrets), err)
	}
	poolCfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("database %s: %w", redact(dbURL, secrets), err)
	}
	poolCfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("database %s: %w", redact(dbURL, secrets), err)
	}
	defer pool.Close()
	st := store.New(pool)
	met := metrics.New(st.QueueDepth)
	faults := fault.New(uint64(time.Now().UnixNano()))

	hostKeys, err := sftpd.LoadHostKeys(filepath.Join(dataDir, "ssh"))
	if err != nil {
		return err
	}
	fingerprints := sftpd.Fingerprints(hostKeys)
	// Start-up housekeeping of the files: finish or drop imports a crash
	// interrupted, remove what interrupted writes left (only what no live
	// writer holds, in this process or another, and older than an upload
	// lease) and the files of requests deleted while a crash came between
	// the record and its files.
	if err := httpapi.RecoverImports(ctx, logger, st, fstore); err != nil {
		return fmt.Errorf("recover interrupted imports: %w", err)
	}
	if n, err := fstore.SweepPartials(ctx, uploadLease); err != nil {
		logger.Warn("sweep interrupted writes", "err", err)
	} else if n > 0 {
		logger.Info("removed what interrupted writes left", "files", n)
	}
	if err := sweepDeleted(ctx, logger, st, fstore); err != nil {
		logger.Warn("sweep the files of deleted requests", "err", err)
	}
	uploads := httpapi.NewUploads()

	sftpSrv, err := sftpd.New(logger, st, sftpd.Config{HostSigners: hostKeys, Files: fstore, IdleTimeout: cfg.SFTPIdleTimeout,
		Ciphers: cfg.SFTPCiphers, Metrics: met, Faults: faults, UploadLease: uploadLease, MaxUploadBytes: cfg.MaxUploadBytes,
		UploadFsync: cfg.UploadFsync, LoginGrace: cfg.SSHLoginGrace, MaxStartups: cfg.SSHMaxStartups,
		MaxStartupsPerAddress: cfg.SSHMaxStartupsPerAddress})
	if err != nil {
		return err
	}

	scratchURL := cfg.ScratchDatabaseURL
	if scratchURL == "" {
		scratchURL = dbURL
	}
	eng, err := engine.New(logger, engine.Config{Kind: cfg.Engine, DatabaseURL: scratchURL, AppDatabaseURL: dbURL,
		Targets: cfg.Targets, ScriptsDir: cfg.ScriptsDir, Command: cfg.EngineCommand, Timeout: cfg.EngineTimeout,
		Files: fstore, WorkDir: workDir, DataRoot: dataDir, MockDuration: cfg.MockDuration, ToolsUser: cfg.ToolsUser, ReservedUIDs: reserved,
		MaxRestoreBytes: cfg.MaxRestoreBytes})
	if err != nil {
		return err
	}
	defer eng.Close()
	if cfg.Workers > 0 {
		// Untrusted work must be confinable before any is taken.
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := eng.Prepare(pctx)
		cancel()
		if err != nil {
			return err
		}
		logger.Info("uploads are restored as throwaway unprivileged roles; their tools run as an unprivileged OS user",
			"tools_user", eng.ToolsUser(), "max_restore_bytes", cfg.MaxRestoreBytes)
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
	if cfg.SFTPPublicPort == 0 { // advertise the port actually bound
		cfg.SFTPPublicPort = sshLn.Addr().(*net.TCPAddr).Port
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

	// The pages for people (internal/web): the upgrade form, the status
	// pages and the operator console, on the API's router.
	pages := web.New(logger, web.Config{Requests: st, Files: fstore, Console: st, AdminToken: cfg.AdminToken, Faults: faults,
		PublicURL: publicURL, Region: cfg.Region, Rules: input.Rules{Targets: cfg.Targets, ContractValidFunc: contractValid},
		MaxUploadBytes: cfg.MaxUploadBytes, SFTP: web.SFTPInfo{Host: sftpHost, Port: cfg.SFTPPublicPort, HostKeys: fingerprints},
		Engine: cfg.Engine, SQLStreams: true})

	api := httpapi.NewHandler(logger, httpapi.Config{
		Requests:       st,
		Files:          fstore,
		Admin:          st,
		AdminToken:     cfg.AdminToken,
		PublicURL:      publicURL,
		Region:         cfg.Region,
		Rules:          input.Rules{Targets: cfg.Targets, ContractValidFunc: contractValid},
		MaxUploadBytes: cfg.MaxUploadBytes,
		UploadLease:    uploadLease,
		Uploads:        uploads,
		SFTP:           httpapi.SFTPInfo{Host: sftpHost, Port: cfg.SFTPPublicPort, AccessTTL: cfg.SFTPAccessTTL},
		SQLStream:      eng.OpenSQL,
		Metrics:        met,
		Faults:         faults,

		Mounts: []func(chi.Router){pages.Routes}, BrowserNotFound: http.HandlerFunc(pages.NotFound),
	})
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("upgrade-server started", "http_addr", ln.Addr().String(), "public_url", publicURL,
		"data_dir", dataDir, "embedded_db", cfg.DatabaseURL == "", "targets", len(cfg.Targets),
		"contracts", nContracts, "max_upload_bytes", cfg.MaxUploadBytes)
	logger.Info("sftp daemon started", "sftp_addr", sshLn.Addr().String(), "advertised", fmt.Sprintf("%s:%d", sftpHost, cfg.SFTPPublicPort),
		"host_keys", fingerprints)
	if ready != nil {
		ready(Addrs{HTTP: ln.Addr(), SFTP: sshLn.Addr(), PublicURL: publicURL,
			LocalURL: derivePublicURL(ln.Addr()), LocalSFTP: strings.TrimPrefix(derivePublicURL(sshLn.Addr()), "http://")})
	}

	// A writer that takes an upload over (in any process) announces it;
	// the front end holding the replaced writer here stops it at once. The
	// listener outlives the listeners' shutdown, while uploads finish.
	listenCtx, stopListening := context.WithCancel(context.WithoutCancel(ctx))
	defer stopListening()
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		st.ListenUploads(listenCtx, func(id int64, token string) {
			if !sftpSrv.StopUpload(id, token) {
				uploads.Stop(id, token)
			}
		})
	}()
	defer func() { stopListening(); <-listening }()

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

// sweepDeleted removes the files of requests deleted while a crash came
// between their record and their files (the deletion is recorded, the
// files' removal forgets it), then forgets them.
func sweepDeleted(ctx context.Context, logger *slog.Logger, st *store.Store, fs *files.Store) error {
	ids, err := st.DeletedRequests(ctx)
	if err != nil || len(ids) == 0 {
		return err
	}
	for _, id := range ids {
		if err := fs.RemoveRequest(ctx, id); err != nil {
			return err
		}
	}
	logger.Info("removed the files of deleted requests", "requests", len(ids))
	return st.ForgetDeleted(ctx, ids)
}

// uploadLease is how long an upload's lease lasts between renewals: a
// writer that vanished without a word frees its request after it, and a
// writer that took an upload over waits up to half of it for the one it
// replaced to stop.
const uploadLease = time.Minute

// derivePublicURL builds the base URL from the bound listen address: the
// unspecified address becomes localhost, never 0.0.0.0.
func derivePublicURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://localhost"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// contractChecker returns the ContractValidFunc for UPGRADE_CONTRACTS: nil
// when unset (any non-empty contract), a fixed set for a list, or the lines
// of a file given as @FILE (blank lines and # comments ignored).
func contractChecker(spec string) (func(string) bool, int, error) {
	if spec == "" {
		return nil, 0, nil
	}
	valid := map[string]bool{}
	if path, ok := strings.CutPrefix(spec, "@"); ok {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, fmt.Errorf("--contracts: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				valid[line] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, 0, fmt.Errorf("--contracts: %w", err)
		}
	} else {
		for _, c := range strings.Split(spec, ",") {
			if c = strings.TrimSpace(c); c != "" {
				valid[c] = true
			}
		}
	}
	if len(valid) == 0 {
		return nil, 0, errors.New("--contracts: no contract listed")
	}
	return func(c string) bool { return valid[c] }, len(valid), nil
}
