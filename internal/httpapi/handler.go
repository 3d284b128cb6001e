package httpapi

import (
	"context"
	_ "embed"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// openAPI describes the v1 and admin APIs (kept true by openapi_test.go).
//
//go:embed openapi.json
var openAPI []byte

// RequestStore is what the HTTP API needs from the store; *store.Store
// satisfies it.
type RequestStore interface {
	Ping(ctx context.Context) error
	CreateRequest(ctx context.Context, n store.NewRequest) (store.Request, error)
	Request(ctx context.Context, id int64) (store.Request, error)
	TakeUpload(ctx context.Context, id int64, token string, lease time.Duration, inPlace bool) (string, error)
	RenewUpload(ctx context.Context, id int64, token string, lease time.Duration) error
	CompleteUpload(ctx context.Context, id int64, token string, u store.Upload) (store.Request, string, error)
	AbortUpload(ctx context.Context, id int64, token string) error
	Process(ctx context.Context, id int64) (store.Request, error)
	Transition(ctx context.Context, id int64, to store.State, message string, from ...store.State) (store.Request, error)
	GrantSFTP(ctx context.Context, id int64, keys []store.SFTPKey, ttl time.Duration, allowed ...store.State) (store.Request, error)
	AddEvent(ctx context.Context, id int64, level, message string) error
	Events(ctx context.Context, id int64, limit int) ([]store.Event, error)
	CountStatusPoll(ctx context.Context, id int64) error
}

// FileStore is what the HTTP API needs of the request files;
// *files.Store satisfies it. The API touches no file itself.
type FileStore interface {
	Open(ctx context.Context, id int64, name files.Name) (files.Object, error)
	Stat(ctx context.Context, id int64, name files.Name) (files.Info, error)
	List(ctx context.Context, id int64) ([]files.Info, error)
	Receive(ctx context.Context, id int64, name files.Name, r io.Reader, max int64) (files.Received, error)
	Remove(ctx context.Context, id int64, names ...files.Name) error
	RemoveRequest(ctx context.Context, id int64) error
	StagedSize(id int64, name files.Name) (int64, bool)
	NewImport(ctx context.Context) (*files.Import, error)
	OpenSet(ctx context.Context, id int64, set files.Name) (*files.Set, error)
}

// SQLStreamFunc converts a request's file, a dump with the given layers,
// to plain SQL on the fly (engine.Engine.OpenSQL).
type SQLStreamFunc func(ctx context.Context, id int64, name files.Name, compressions []string) (io.ReadCloser, error)

// Config is what the API is built from; NewHandler hands each handler only
// the parts it uses. Zero values get the documented defaults.
type Config struct {
	Requests RequestStore
	Files    FileStore
	// Admin serves the admin API under /admin/v1 for AdminToken; it is off
	// when either is unset.
	Admin      AdminStore
	AdminToken string
	// PublicURL is the base of every URL the API returns, without a
	// trailing slash; Region the URL segment of status and file URLs ("eu1").
	PublicURL string
	Region    string
	// Rules are the valid targets and contracts of create.
	Rules input.Rules
	// MaxUploadBytes bounds an upload; 0 means no limit.
	MaxUploadBytes int64
	// UploadLease is how long an upload's lease lasts between renewals
	// (default 1 minute); a crashed upload frees the request after it.
	UploadLease time.Duration
	// Uploads are the HTTP uploads running in this process; the caller
	// stops one through it when a writer elsewhere takes its request over
	// (nil: the handler keeps its own).
	Uploads *Uploads
	// SFTP is what request_sftp_access advertises.
	SFTP SFTPInfo
	// SQLStream serves original/sql and upgraded/sql; nil serves none.
	SQLStream SQLStreamFunc
	// JournalSize is how many recent v1 calls the admin journal keeps (default 1000).
	JournalSize int
	// Faults are the injected faults (admin API); nil injects none.
	Faults *fault.Injector
	// Metrics records calls and bytes; nil records nothing and serves no /metrics.
	Metrics *metrics.Metrics
	// NowFunc is the clock (tests); nil means time.Now.
	NowFunc func() time.Time
	// Mounts add the routes of other front ends (the pages for people, the
	// JSON-RPC calls of Odoo's client) to the same router, behind the same
	// middleware; they take precedence over none of the API's routes. The
	// status page of status_url is one of them (internal/web).
	Mounts []func(r chi.Router)
	// BrowserNotFound, when set, answers a browser (Accept: text/html)
	// instead of the JSON 404 API clients get: for an unknown path
	// (ROUTE:NOT_FOUND), and on the file URLs for a wrong region, id or key
	// (REQUEST:NOT_FOUND) or a file not there yet (FILE:NOT_FOUND).
	BrowserNotFound http.Handler
}

// SFTPInfo is the SFTP daemon as clients reach it.
type SFTPInfo struct {
	Host string
	Port int
	// AccessTTL is how long a grant lasts (default 24h).
	AccessTTL time.Duration
}

// NewHandler returns the HTTP API: every route of routes.go behind the
// correlation-id, logging and recovery middleware.
func NewHandler(logger *slog.Logger, cfg Config) http.Handler {
	if cfg.Region == "" {
		cfg.Region = "eu1"
	}
	if cfg.SFTP.AccessTTL == 0 {
		cfg.SFTP.AccessTTL = 24 * time.Hour
	}
	if cfg.UploadLease == 0 {
		cfg.UploadLease = time.Minute
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.Uploads == nil {
		cfg.Uploads = NewUploads()
	}
	if cfg.Faults == nil {
		cfg.Faults = fault.New(uint64(time.Now().UnixNano()))
	}
	logger = logger.With("component", "httpapi")
	r := chi.NewRouter()
	r.Use(withCorrelationID, logRequests(logger), recoverPanics(logger))
	addRoutes(r, logger, cfg)
	return r
}
