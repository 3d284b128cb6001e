package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
	"github.com/upgrade-server/upgrade-server/internal/sftpd"
)

// Config is the whole configuration: the server's (internal/app.Config)
// and the logger's.
type Config struct {
	app.Config
	LogFormat string
	LogLevel  string
}

const defaultTargets = "7.0,8.0,9.0,10.0,11.0,12.0,13.0,14.0,15.0,16.0,17.0,18.0,19.0"

type setting struct {
	name, env, def, help string
}

var settings = []setting{
	{"http-addr", "UPGRADE_HTTP_ADDR", ":8080", "address the HTTP API listens on (off: none, for a process that only works)"},
	{"https-addr", "UPGRADE_HTTPS_ADDR", ":8443", "address of the HTTPS listener (the same routes; Odoo's upgrade client needs it), off: none"},
	{"tls-cert", "UPGRADE_TLS_CERT", "", "the HTTPS certificate, PEM (default: a self-signed one made once under <data-dir>/tls)"},
	{"tls-key", "UPGRADE_TLS_KEY", "", "the HTTPS certificate's private key, PEM"},
	{"host-uri", "UPGRADE_HOST_URI", "", "host (or host:port) Odoo's upgrade client is sent to for HTTPS and rsync (default: the public URL's host, with the HTTPS port unless 443)"},
	{"rsync-ports", "UPGRADE_RSYNC_PORTS", "", "ports of the per-transfer rsync endpoints, FIRST-LAST or one port (default: any free port)"},
	{"rsync-idle-timeout", "UPGRADE_RSYNC_IDLE_TIMEOUT", "10m", "an rsync endpoint that no client has used for this long is closed"},
	{"public-url", "UPGRADE_PUBLIC_URL", "", "base of every URL the API returns (default: derived from the listen address, localhost for 0.0.0.0)"},
	{"region", "UPGRADE_REGION", "eu1", "region segment of status and file URLs"},
	{"data-dir", "UPGRADE_DATA_DIR", "./data", "data directory: host keys, embedded PostgreSQL, staging of SFTP uploads, work folders, and the request files unless --storage says otherwise"},
	{"storage", "UPGRADE_STORAGE", "", "where request files go: file:///path, or s3://bucket/prefix for S3-compatible object storage (default: file://<data-dir>/requests)"},
	{"s3-endpoint", "UPGRADE_S3_ENDPOINT", "", "the object store's URL, http(s)://host:port (default: AWS_ENDPOINT_URL, else AWS S3)"},
	{"s3-region", "UPGRADE_S3_REGION", "", "the object store's region (default: AWS_REGION)"},
	{"s3-path-style", "UPGRADE_S3_PATH_STYLE", "false", "address buckets as <endpoint>/<bucket> (most self-hosted stores want true)"},
	{"s3-access-key", "UPGRADE_S3_ACCESS_KEY", "", "the object store's access key (default: AWS_ACCESS_KEY_ID, ~/.aws/credentials, an instance role)"},
	{"s3-secret-key", "UPGRADE_S3_SECRET_KEY", "", "the object store's secret key (default: AWS_SECRET_ACCESS_KEY…); never printed"},
	{"database-url", "UPGRADE_DATABASE_URL", "", "PostgreSQL URL or key=value connection string (default: an embedded cluster in <data-dir>/postgres)"},
	{"scratch-database-url", "UPGRADE_SCRATCH_DATABASE_URL", "", "PostgreSQL server where uploads are restored, as a role with CREATEDB and CREATEROLE (default: the database URL's server)"},
	{"targets", "UPGRADE_TARGETS", defaultTargets, "comma-separated valid target versions"},
	{"contracts", "UPGRADE_CONTRACTS", "", "valid contracts: a comma-separated list, or @FILE with one per line (default: any non-empty contract)"},
	{"max-upload-bytes", "UPGRADE_MAX_UPLOAD_BYTES", "100GiB", "largest accepted upload, in bytes or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB); 0 means no limit"},
	{"upload-fsync", "UPGRADE_UPLOAD_FSYNC", "true", "fsync each upload before answering (false: faster, but a machine crash can lose an upload answered as complete)"},
	{"sftp-addr", "UPGRADE_SFTP_ADDR", ":2200", "address the SSH/SFTP daemon listens on (off: none)"},
	{"ssh-host-keys", "UPGRADE_SSH_HOST_KEYS", "", "folder of the SSH host keys, made on first start (default: <data-dir>/ssh); front ends behind one address share it"},
	{"sftp-idle-timeout", "UPGRADE_SFTP_IDLE_TIMEOUT", "10m", "SFTP connections without traffic for this long are closed"},
	{"sftp-ciphers", "UPGRADE_SFTP_CIPHERS", "aes128-gcm@openssh.com,aes256-gcm@openssh.com",
		"SSH ciphers the daemon offers; add aes128-ctr,aes256-ctr or chacha20-poly1305@openssh.com for clients without AES-GCM (slower)"},
	{"ssh-login-grace", "UPGRADE_SSH_LOGIN_GRACE", "30s", "an SSH connection that has not authenticated this long after it was accepted is closed (sshd's LoginGraceTime)"},
	{"ssh-max-startups", "UPGRADE_SSH_MAX_STARTUPS", "100", "most SSH connections not yet authenticated at once; more are closed at once (sshd's MaxStartups)"},
	{"ssh-max-startups-per-address", "UPGRADE_SSH_MAX_STARTUPS_PER_ADDRESS", "10", "most SSH connections not yet authenticated from one address"},
	{"sftp-public-host", "UPGRADE_SFTP_PUBLIC_HOST", "", "host request_sftp_access advertises (default: the public URL's host)"},
	{"sftp-public-port", "UPGRADE_SFTP_PUBLIC_PORT", "2200", "port request_sftp_access advertises (0: the port the daemon is bound to)"},
	{"sftp-access-ttl", "UPGRADE_SFTP_ACCESS_TTL", "24h", "how long an SFTP grant lasts"},
	{"workers", "UPGRADE_WORKERS", "2", "requests processed at once by this process (0: none, an API-only replica)"},
	{"worker-lease", "UPGRADE_WORKER_LEASE", "30s", "a processing job's lease, renewed every third of it: a request whose worker died is taken up by another after it"},
	{"engine", "UPGRADE_ENGINE", "builtin", "upgrade engine: builtin (restore, SQL upgrade, dump), command (your upgrade command) or passthrough (no PostgreSQL work)"},
	{"engine-command", "UPGRADE_ENGINE_COMMAND", "", "the command engine's shell command, run against the restored scratch database (PGHOST, PGDATABASE, UPGRADE_SOURCE_VERSION… set)"},
	{"engine-timeout", "UPGRADE_ENGINE_TIMEOUT", "4h", "a run's time limit: restore, upgrade and dump"},
	{"max-restore-bytes", "UPGRADE_MAX_RESTORE_BYTES", "200GiB", "most bytes a restore may write: what an upload expands to, and the growth of its scratch database (0: no limit)"},
	{"tools-user", "UPGRADE_TOOLS_USER", "nobody", "when run as root, the OS user that runs pg_restore, psql, pg_dump and the command engine on uploads"},
	{"scripts-dir", "UPGRADE_SCRIPTS_DIR", "", "operator SQL scripts for the builtin engine: <dir>/<series>/*.sql, run for each version hop"},
	{"mock-duration", "UPGRADE_MOCK_DURATION", "0s", "how long passthrough and scenario runs take (0s: instant, for CI; 2m: a realistic demo)"},
	{"admin-token", "UPGRADE_ADMIN_TOKEN", "", "enables the admin API under /admin/v1 for this bearer token (disabled when empty)"},
	{"shutdown-timeout", "UPGRADE_SHUTDOWN_TIMEOUT", "2m", "how long shutdown waits for running uploads"},
	{"log-format", "UPGRADE_LOG_FORMAT", "text", "log format: text or json"},
	{"log-level", "UPGRADE_LOG_LEVEL", "info", "log level: debug, info, warn or error"},
}

// errVersion: --version was given; run prints the version and stops.
var errVersion = errors.New("version requested")

const usageHead = `Usage: upgrade-server [flags]                 run the server
       upgrade-server admin [--url URL] [--token TOKEN] COMMAND [ARGS]
                                             drive a running server's admin API
                                             (upgrade-server admin --help lists the commands)
       upgrade-server --version              print the version

upgrade-server: a self-hosted, wire-compatible Odoo Upgrade API.

Every flag can also be set by its environment variable; a flag wins.

`

// loadConfig reads flags from args (args[0] is the program, whatever its
// path: under go run it is in Go's build cache) with defaults from getenv,
// and validates everything once. It returns flag.ErrHelp after printing
// the usage for --help, and errVersion for --version.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("upgrade-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vals := map[string]*string{}
	for _, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		vals[s.name] = fs.String(s.name, def, s.help)
	}
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		for _, s := range settings {
			def := s.def
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(stderr, "  --%s (%s, default %s)\n        %s\n", s.name, s.env, def, s.help)
		}
		fmt.Fprint(stderr, "  --version\n        print the version and exit\n")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return Config{}, err
	}
	if *version {
		return Config{}, errVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	get := func(name string) string { return strings.TrimSpace(*vals[name]) }

	cfg := Config{LogFormat: get("log-format"), LogLevel: get("log-level")}
	cfg.Config = app.Config{
		HTTPAddr:           get("http-addr"),
		PublicURL:          strings.TrimRight(get("public-url"), "/"),
		Region:             get("region"),
		DataDir:            get("data-dir"),
		DatabaseURL:        get("database-url"),
		ScratchDatabaseURL: get("scratch-database-url"),
		ToolsUser:          get("tools-user"),
		Contracts:          get("contracts"),
		SFTPAddr:           get("sftp-addr"),
		SFTPPublicHost:     get("sftp-public-host"),
		AdminToken:         get("admin-token"),
		Storage:            get("storage"),
		S3: files.S3Config{Endpoint: get("s3-endpoint"), Region: get("s3-region"), AccessKey: get("s3-access-key"),
			SecretKey: get("s3-secret-key")},
	}
	var errs []error
	for _, t := range strings.Split(get("targets"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	if len(cfg.Targets) == 0 {
		errs = append(errs, errors.New("--targets: at least one target version is needed"))
	}
	var err error
	if cfg.MaxUploadBytes, err = parseBytes(get("max-upload-bytes")); err != nil {
		errs = append(errs, fmt.Errorf("--max-upload-bytes: %w", err))
	}
	if cfg.MaxRestoreBytes, err = parseBytes(get("max-restore-bytes")); err != nil {
		errs = append(errs, fmt.Errorf("--max-restore-bytes: %w", err))
	}
	if cfg.UploadFsync, err = strconv.ParseBool(get("upload-fsync")); err != nil {
		errs = append(errs, fmt.Errorf("--upload-fsync: %q is neither true nor false", get("upload-fsync")))
	}
	if cfg.SFTPPublicPort, err = strconv.Atoi(get("sftp-public-port")); err != nil || cfg.SFTPPublicPort < 0 || cfg.SFTPPublicPort > 65535 {
		errs = append(errs, fmt.Errorf("--sftp-public-port: %q is not a port number", get("sftp-public-port")))
	}
	if cfg.SFTPAccessTTL, err = time.ParseDuration(get("sftp-access-ttl")); err != nil || cfg.SFTPAccessTTL <= 0 {
		errs = append(errs, fmt.Errorf("--sftp-access-ttl: %q is not a positive duration such as 24h", get("sftp-access-ttl")))
	}
	cfg.SSHHostKeys = get("ssh-host-keys")
	cfg.HTTPSAddr, cfg.TLSCert, cfg.TLSKey = get("https-addr"), get("tls-cert"), get("tls-key")
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together: set both, or neither for a self-signed certificate"))
	}
	cfg.HostURI = get("host-uri")
	if cfg.HostURI != "" && !validHostURI(cfg.HostURI) {
		errs = append(errs, fmt.Errorf("--host-uri: %q is not a host name or address, with an optional :port (no scheme, no path)", cfg.HostURI))
	}
	cfg.RsyncPorts = get("rsync-ports")
	if _, err := rsyncd.ParsePorts(cfg.RsyncPorts); err != nil {
		errs = append(errs, fmt.Errorf("--rsync-ports: %w", err))
	}
	if cfg.RsyncIdleTimeout, err = time.ParseDuration(get("rsync-idle-timeout")); err != nil || cfg.RsyncIdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--rsync-idle-timeout: %q is not a positive duration such as 10m", get("rsync-idle-timeout")))
	}
	if cfg.SFTPIdleTimeout, err = time.ParseDuration(get("sftp-idle-timeout")); err != nil || cfg.SFTPIdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--sftp-idle-timeout: %q is not a positive duration such as 10m", get("sftp-idle-timeout")))
	}
	if cfg.SSHLoginGrace, err = time.ParseDuration(get("ssh-login-grace")); err != nil || cfg.SSHLoginGrace <= 0 {
		errs = append(errs, fmt.Errorf("--ssh-login-grace: %q is not a positive duration such as 30s", get("ssh-login-grace")))
	}
	if cfg.SSHMaxStartups, err = strconv.Atoi(get("ssh-max-startups")); err != nil || cfg.SSHMaxStartups < 1 {
		errs = append(errs, fmt.Errorf("--ssh-max-startups: %q is not a positive number", get("ssh-max-startups")))
	}
	if cfg.SSHMaxStartupsPerAddress, err = strconv.Atoi(get("ssh-max-startups-per-address")); err != nil || cfg.SSHMaxStartupsPerAddress < 1 {
		errs = append(errs, fmt.Errorf("--ssh-max-startups-per-address: %q is not a positive number", get("ssh-max-startups-per-address")))
	}
	for _, c := range strings.Split(get("sftp-ciphers"), ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if !slices.Contains(sftpd.SupportedCiphers(), c) {
			errs = append(errs, fmt.Errorf("--sftp-ciphers: %q is not one of %s", c, strings.Join(sftpd.SupportedCiphers(), ", ")))
		}
		cfg.SFTPCiphers = append(cfg.SFTPCiphers, c)
	}
	if len(cfg.SFTPCiphers) == 0 {
		errs = append(errs, errors.New("--sftp-ciphers: at least one cipher is needed"))
	}
	if _, _, err := net.SplitHostPort(cfg.SFTPAddr); err != nil && cfg.SFTPAddr != app.Off {
		errs = append(errs, fmt.Errorf("--sftp-addr: %w", err))
	}
	if cfg.S3.PathStyle, err = strconv.ParseBool(get("s3-path-style")); err != nil {
		errs = append(errs, fmt.Errorf("--s3-path-style: %q is neither true nor false", get("s3-path-style")))
	}
	if cfg.WorkerLease, err = time.ParseDuration(get("worker-lease")); err != nil || cfg.WorkerLease < 3*time.Second {
		errs = append(errs, fmt.Errorf("--worker-lease: %q is not a duration of 3s or more such as 30s", get("worker-lease")))
	}
	cfg.Engine, cfg.EngineCommand, cfg.ScriptsDir = get("engine"), get("engine-command"), get("scripts-dir")
	if cfg.Engine != "builtin" && cfg.Engine != "command" && cfg.Engine != "passthrough" {
		errs = append(errs, fmt.Errorf("--engine: %q is not builtin, command or passthrough", cfg.Engine))
	}
	if cfg.Engine == "command" && cfg.EngineCommand == "" {
		errs = append(errs, errors.New("--engine-command: the command engine needs a command"))
	}
	if cfg.Workers, err = strconv.Atoi(get("workers")); err != nil || cfg.Workers < 0 {
		errs = append(errs, fmt.Errorf("--workers: %q is not a number of workers", get("workers")))
	}
	if cfg.EngineTimeout, err = time.ParseDuration(get("engine-timeout")); err != nil || cfg.EngineTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--engine-timeout: %q is not a positive duration such as 4h", get("engine-timeout")))
	}
	if cfg.MockDuration, err = time.ParseDuration(get("mock-duration")); err != nil || cfg.MockDuration < 0 {
		errs = append(errs, fmt.Errorf("--mock-duration: %q is not a duration such as 0s or 2m", get("mock-duration")))
	}
	if cfg.ShutdownTimeout, err = time.ParseDuration(get("shutdown-timeout")); err != nil || cfg.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout: %q is not a duration such as 2m", get("shutdown-timeout")))
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format: %q is neither text nor json", cfg.LogFormat))
	}
	if _, ok := logLevels[cfg.LogLevel]; !ok {
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", cfg.LogLevel))
	}
	if cfg.Region == "" || strings.ContainsAny(cfg.Region, "/?#") {
		errs = append(errs, fmt.Errorf("--region: %q is not a URL segment", cfg.Region))
	}
	if cfg.PublicURL != "" {
		if u, err := url.Parse(cfg.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--public-url: %q is not an http(s) URL", cfg.PublicURL))
		}
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil && cfg.HTTPAddr != app.Off {
		errs = append(errs, fmt.Errorf("--http-addr: %w", err))
	}
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: empty"))
	}
	return cfg, errors.Join(errs...)
}

// parseBytes reads "1073741824", "100GiB", "2GB" or "0".
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 107374182400 or 100GiB", s)
	}
	return n * mult, nil
}

// validHostURI accepts what Odoo's client can use as a host: a name or
// an address, with an optional port, nothing else.
func validHostURI(s string) bool {
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	}
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "" || len(host) > 253 || strings.ContainsAny(host, "/:@?#[] ") {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return false
		}
	}
	return true
}
