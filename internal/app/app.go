// Package app wires upgrade-server together: data directory, database
// (embedded or given), store, HTTP API, SFTP daemon and workers, and runs
// them until its context ends. cmd/upgrade-server and upgradetest use it.
package app

import (
	"bufio"
	"context"
	"crypto/tls"
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
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/pgembed"
	"github.com/upgrade-server/upgrade-server/internal/rpcapi"
	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
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
	// HTTPSAddr is the HTTPS listener's address ("" or Off: none): the
	// same routes, which Odoo's upgrade client calls after its host
	// switch. TLSCert and TLSKey are its certificate ("": one generated
	// once under <DataDir>/tls).
	HTTPSAddr, TLSCert, TLSKey string
	// HostURI is what Odoo's client is told to use as its server and SSH
	// host (assigned_host_uri): "" is the public URL's host, with the
	// HTTPS port unless it is 443.
	HostURI string
	// RsyncPorts are the ports rsync endpoints take (rsyncd.ParsePorts;
	// "": any free port); RsyncIdleTimeout closes an endpoint left idle.
	RsyncPorts       string
	RsyncIdleTimeout time.Duration
	// SSHHostKeys is the host keys' folder ("": <DataDir>/ssh).
	SSHHostKeys    string
	SFTPCiphers    []string
	SFTPPublicHost string
	SFTPPublicPort int
	SFTPAccessTTL  time.Duration
	// SSHLoginGrace, SSHMaxStartups and SSHMaxStartupsPerAddress bound the
	// connections that have not authenticated (sftpd.Config; zero: defaults).
	SSHLoginGrace            time.Duration
	SSHMaxStartups           int
	SSHMaxStartupsPerAddress int
	ShutdownTimeout          time.Duration
	Workers                  int
	WorkerLease              time.Duration
	Engine                   string
	EngineCommand            string
	EngineTimeout            time.Duration
	ToolsUser                string
	MaxRestoreBytes          int64
	ScriptsDir               string
	MockDuration             time.Duration
	AdminToken               string
}

// Off, as an HTTP or SFTP address, runs no such listener (a process that
// only works, with UPGRADE_WORKERS > 0, has neither).
const Off = "off"

// Addrs are where a running server listens (nil: that listener is off).
type Addrs struct {
	HTTP, SFTP, HTTPS net.Addr
	PublicURL         string
	// HostURI is what Odoo's client is told (assigned_host_uri), and
	// CertPath the HTTPS certificate it can trust (SSL_CERT_FILE).
	HostURI, CertPath string
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
	st := store.New(pool, logger)
	met := metrics.New(st.QueueDepth)
	faults := fault.New(uint64(time.Now().UnixNano()))

	keyDir := cfg.SSHHostKeys
	if keyDir == "" {
		keyDir = filepath.Join(dataDir, "ssh")
	}
	hostKeys, err := sftpd.LoadHostKeys(keyDir)
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
	sweepTransferDirs(ctx, logger, st, eng)
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
	wrk := worker.New(logger, st, eng, worker.Config{Slots: cfg.Workers, SoftStop: cfg.ShutdownTimeout, Lease: cfg.WorkerLease,
		MockDuration: cfg.MockDuration, FixedEstimate: cfg.Engine == engine.Passthrough, Metrics: met})

	var ln, sshLn net.Listener
	if cfg.HTTPAddr != Off {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("http: %w", err)
		}
		defer ln.Close()
	}
	if cfg.SFTPAddr != Off {
		if sshLn, err = net.Listen("tcp", cfg.SFTPAddr); err != nil {
			return fmt.Errorf("sftp: %w", err)
		}
		defer sshLn.Close()
		if cfg.SFTPPublicPort == 0 { // advertise the port actually bound
			cfg.SFTPPublicPort = sshLn.Addr().(*net.TCPAddr).Port
		}
	}
	var tlsLn net.Listener
	if cfg.HTTPSAddr != "" && cfg.HTTPSAddr != Off {
		if tlsLn, err = net.Listen("tcp", cfg.HTTPSAddr); err != nil {
			return fmt.Errorf("https: %w", err)
		}
		defer tlsLn.Close()
	}
	publicURL := cfg.PublicURL
	if publicURL == "" && ln != nil {
		publicURL = derivePublicURL(ln.Addr())
	}
	sftpHost := cfg.SFTPPublicHost
	if sftpHost == "" {
		u, _ := url.Parse(publicURL)
		sftpHost = u.Hostname()
	}
	hostURI := cfg.HostURI
	if hostURI == "" {
		hostURI = deriveHostURI(publicURL, tlsLn)
	}
	var cert *serverCert
	if tlsLn != nil {
		u, _ := url.Parse(publicURL)
		if cert, err = loadServerCert(cfg.TLSCert, cfg.TLSKey, filepath.Join(dataDir, "tls"), []string{u.Hostname(), hostOf(hostURI)}); err != nil {
			return err
		}
		tlsLn = tls.NewListener(tlsLn, &tls.Config{Certificates: []tls.Certificate{cert.cert}, MinVersion: tls.VersionTLS12})
	}

	// Odoo's own client: its JSON-RPC calls on the same router, its rsync
	// transfers on endpoints of their own (front ends only).
	var endpoints rpcapi.Endpoints
	if ln != nil || tlsLn != nil {
		rs, err := newRsync(logger, cfg, hostKeys, eng)
		if err != nil {
			logger.Warn("rsync transfers are off: Odoo's upgrade client can create requests but not upload or download", "err", err)
		} else {
			defer rs.Close()
			endpoints = rs
		}
	}
	rpc := rpcapi.New(logger, rpcapi.Config{Requests: st, Files: fstore, Folders: eng, Rsync: endpoints,
		Rules: input.Rules{Targets: cfg.Targets, ContractValidFunc: contractValid}, HostURI: hostURI,
		MaxUploadBytes: cfg.MaxUploadBytes, UploadLease: uploadLease, Metrics: met,
		PgVersionCompatible: func(archive, pgDump string) bool {
			return engine.PgVersionCompatible(dump.Writer{PgDump: pgDump, Archive: archive})
		}})

	// The pages for people (internal/web): the upgrade form, the status
	// pages and the operator console, on the API's router.
	pages := web.New(logger, web.Config{Requests: st, Files: fstore, Console: st, AdminToken: cfg.AdminToken, Faults: faults,
		PublicURL: publicURL, Region: cfg.Region, Rules: input.Rules{Targets: cfg.Targets, ContractValidFunc: contractValid},
		MaxUploadBytes: cfg.MaxUploadBytes, SFTP: web.SFTPInfo{Host: sftpHost, Port: cfg.SFTPPublicPort, HostKeys: fingerprints},
		Engine: cfg.Engine, SQLStreams: true})

	api := httpapi.NewHandler(logger, httpapi.Config{
		Requests:        st,
		Files:           fstore,
		Admin:           st,
		AdminToken:      cfg.AdminToken,
		PublicURL:       publicURL,
		Region:          cfg.Region,
		Rules:           input.Rules{Targets: cfg.Targets, ContractValidFunc: contractValid},
		MaxUploadBytes:  cfg.MaxUploadBytes,
		UploadLease:     uploadLease,
		Uploads:         uploads,
		SFTP:            httpapi.SFTPInfo{Host: sftpHost, Port: cfg.SFTPPublicPort, AccessTTL: cfg.SFTPAccessTTL},
		SQLStream:       eng.OpenSQL,
		Metrics:         met,
		Faults:          faults,
		Mounts:          []func(chi.Router){rpc.Mount, pages.Routes},
		BrowserNotFound: http.HandlerFunc(pages.NotFound),
	})
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           api,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}
	srv, tlsSrv := newServer(), newServer()
	addrs := Addrs{PublicURL: publicURL, HostURI: hostURI}
	if tlsLn != nil {
		addrs.HTTPS, addrs.CertPath = tlsLn.Addr(), cert.Path
		logger.Info("https started (Odoo's upgrade client)", "https_addr", tlsLn.Addr().String(), "host_uri", hostURI,
			"certificate", cert.Path, "sha256_fingerprint", cert.Fingerprint, "generated", cert.Generated)
	}
	if ln != nil {
		addrs.HTTP, addrs.LocalURL = ln.Addr(), derivePublicURL(ln.Addr())
		logger.Info("upgrade-server started", "http_addr", ln.Addr().String(), "public_url", publicURL,
			"data_dir", dataDir, "embedded_db", cfg.DatabaseURL == "", "targets", len(cfg.Targets),
			"contracts", nContracts, "max_upload_bytes", cfg.MaxUploadBytes)
	} else {
		logger.Info("upgrade-server started without HTTP (a process that only works)", "data_dir", dataDir, "workers", cfg.Workers)
	}
	if sshLn != nil {
		addrs.SFTP, addrs.LocalSFTP = sshLn.Addr(), strings.TrimPrefix(derivePublicURL(sshLn.Addr()), "http://")
		logger.Info("sftp daemon started", "sftp_addr", sshLn.Addr().String(), "advertised", fmt.Sprintf("%s:%d", sftpHost, cfg.SFTPPublicPort),
			"host_keys", fingerprints)
	}
	if ready != nil {
		ready(addrs)
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
	if ln != nil {
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
	}
	if tlsLn != nil {
		g.Go(func() error {
			if err := tlsSrv.Serve(tlsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("https: %w", err)
			}
			return nil
		})
	}
	if ln != nil || tlsLn != nil {
		g.Go(func() error { return rpc.Run(gctx, st.ListenTransferStops) })
	}
	if cfg.Workers > 0 {
		g.Go(func() error { return wrk.Run(gctx) })
	}
	if sshLn != nil {
		g.Go(func() error {
			if err := sftpSrv.Serve(sshLn); err != nil && !errors.Is(err, sftpd.ErrServerClosed) {
				return fmt.Errorf("sftp: %w", err)
			}
			return nil
		})
	}
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
		for _, hs := range []*http.Server{srv, tlsSrv} {
			wg.Go(func() {
				if err := hs.Shutdown(sctx); err != nil {
					logger.Warn("shutdown timed out; closing the remaining connections", "err", err)
					hs.Close()
				}
			})
		}
		wg.Wait()
		return nil
	})
	return g.Wait()
}

// sweepTransferDirs removes the rsync transfer folders no transfer uses:
// downloads whose transfer is not open (in any process), uploads of
// requests that are no longer new (recorded, or moved on) or gone. An
// upload folder of a new request stays: the client's next run resumes it.
func sweepTransferDirs(ctx context.Context, logger *slog.Logger, st *store.Store, eng *engine.Engine) {
	dirs, err := eng.TransferDirs()
	if err != nil {
		return
	}
	removed := 0
	for id, kinds := range dirs {
		t, terr := st.TransferOf(ctx, id)
		live := terr == nil && t.Live
		req, rerr := st.Request(ctx, id)
		for _, k := range kinds {
			stale := false
			switch {
			case live:
			case k == "download":
				stale = true
			case errors.Is(rerr, store.ErrNotFound):
				stale = true
			case rerr == nil && req.State != store.StateDraft:
				stale = true
			}
			if stale {
				if err := eng.RemoveTransferDir(id, k); err != nil {
					logger.Warn("remove a transfer folder", "request_id", id, "err", err)
					continue
				}
				removed++
			}
		}
	}
	if removed > 0 {
		logger.Info("removed rsync transfer folders no transfer uses", "folders", removed)
	}
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

// deriveHostURI is what Odoo's client is told to use when UPGRADE_HOST_URI
// is unset: the public URL's host, with the HTTPS listener's port unless
// it is 443 (the client's own form, host:port, which rsync then sends as
// port:/data/… and the endpoints read back).
func deriveHostURI(publicURL string, tlsLn net.Listener) string {
	u, _ := url.Parse(publicURL)
	host := "localhost"
	if u != nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if tlsLn == nil {
		return host
	}
	_, port, _ := net.SplitHostPort(tlsLn.Addr().String())
	if port == "443" {
		return host
	}
	return net.JoinHostPort(host, port)
}

// hostOf is the host of a host URI (host or host:port).
func hostOf(hostURI string) string {
	if h, _, err := net.SplitHostPort(hostURI); err == nil {
		return h
	}
	return hostURI
}

// newRsync starts the rsync endpoints' server: the SSH host keys of the
// SFTP daemon, on the HTTPS listener's interface, rsync run as the tools
// user.
func newRsync(logger *slog.Logger, cfg Config, hostKeys []gossh.Signer, eng *engine.Engine) (*rsyncd.Server, error) {
	ports, err := rsyncd.ParsePorts(cfg.RsyncPorts)
	if err != nil {
		return nil, err
	}
	host := ""
	if h, _, err := net.SplitHostPort(cfg.HTTPSAddr); err == nil {
		host = h
	}
	return rsyncd.New(logger, rsyncd.Config{HostSigners: hostKeys, ListenHost: host, Ports: ports, IdleTimeout: cfg.RsyncIdleTimeout,
		LoginGrace: cfg.SSHLoginGrace, Credential: eng.ToolsCredential(), Ciphers: cfg.SFTPCiphers})
}

// LocalURL is a listener's address as a URL a person on this machine can
// open: http://localhost:<port> for a wildcard address.
func LocalURL(addr net.Addr) string { return derivePublicURL(addr) }

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
