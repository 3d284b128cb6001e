package httpapi

import (
	"context"
	_ "embed"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/fault"
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
	CompleteUpload(ctx context.Context, id int64, token string, size int64, sha256 string) (store.Request, error)
	AbortUpload(ctx context.Context, id int64, token string) error
	Process(ctx context.Context, id int64) (store.Request, error)
	Transition(ctx context.Context, id int64, to store.State, message string, from ...store.State) (store.Request, error)
	GrantSFTP(ctx context.Context, id int64, keys []store.SFTPKey, ttl time.Duration, allowed ...store.State) (store.Request, error)
	AddEvent(ctx context.Context, id int64, level, message string) error
	Events(ctx context.Context, id int64, limit int) ([]store.Event, error)
	CountStatusPoll(ctx context.Context, id int64) error
}

// Options configure the API. Zero values get the documented defaults.
type Options struct {
	// PublicURL is the base of every URL the API returns, without a trailing slash.
	PublicURL string
	// Region is the URL segment of status and artifact URLs ("eu1").
	Region string
	// Targets are the valid target versions, in the order failures list them.
	Targets []string
	// ContractValidFunc says whether a contract exists; nil accepts any
	// non-empty contract.
	ContractValidFunc func(contract string) bool
	// MaxUploadBytes bounds an upload; 0 means no limit.
	MaxUploadBytes int64
	// SFTPHost and SFTPPort are what request_sftp_access advertises.
	SFTPHost string
	SFTPPort int
	// SFTPHostKeys are the daemon's host key fingerprints, shown on the
	// status page so users can pin them.
	SFTPHostKeys []string
	// SFTPAccessTTL is how long a grant lasts (default 24h).
	SFTPAccessTTL time.Duration
	// Data is the data directory (uploads and artifacts).
	Data datadir.Dir
	// NoUploadSync skips the fsync of finished uploads and the writeback as
	// they stream: faster where durability does not matter (test suites), but
	// a machine crash may then lose an upload already answered as complete.
	NoUploadSync bool
	// UploadLease is how long an upload's lease lasts between renewals
	// (default 1 minute); a crashed upload frees the request after it. A
	// new upload that took over waits up to half of it for the one it
	// replaced to stop.
	UploadLease time.Duration
	// Uploads are the HTTP uploads running in this process; the caller
	// stops one through it when a writer elsewhere takes its request over
	// (nil: the handler keeps its own).
	Uploads *Uploads
	// SQLStreamFunc converts a dump with the given layers to plain SQL for
	// the original/sql and upgraded/sql URLs; nil serves only SQL files the
	// pipeline kept.
	SQLStreamFunc func(ctx context.Context, path string, compressions []string) (io.ReadCloser, error)
	// AdminToken enables the admin API under /admin/v1 (disabled when "").
	AdminToken string
	// AdminStore serves the admin API; nil disables it.
	AdminStore AdminStore
	// JournalSize is how many recent v1 calls the admin journal keeps (default 1000).
	JournalSize int
	// Faults are the injected faults (admin API); nil injects none.
	Faults *fault.Injector
	// Metrics records calls and bytes; nil records nothing and serves no /metrics.
	Metrics *metrics.Metrics
	// NowFunc is the clock (tests); nil means time.Now.
	NowFunc func() time.Time
}

// NewHandler returns the HTTP API: every route of routes.go behind the
// correlation-id, logging and recovery middleware.
func NewHandler(logger *slog.Logger, requests RequestStore, opts Options) http.Handler {
	if opts.Region == "" {
		opts.Region = "eu1"
	}
	if opts.SFTPAccessTTL == 0 {
		opts.SFTPAccessTTL = 24 * time.Hour
	}
	if opts.UploadLease == 0 {
		opts.UploadLease = time.Minute
	}
	if opts.NowFunc == nil {
		opts.NowFunc = time.Now
	}
	if opts.Uploads == nil {
		opts.Uploads = NewUploads()
	}
	if opts.Faults == nil {
		opts.Faults = fault.New(uint64(time.Now().UnixNano()))
	}
	logger = logger.With("component", "httpapi")
	r := chi.NewRouter()
	r.Use(withCorrelationID, logRequests(logger), recoverPanics(logger))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeAnswer(w, r, logger, http.StatusNotFound, []failure{{Reason: reasonRouteNotFound,
			Message: "No such endpoint: " + r.URL.Path}}, nil)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeAnswer(w, r, logger, http.StatusMethodNotAllowed, []failure{{Reason: reasonMethodNotAllowed,
			Message: "Method " + r.Method + " is not allowed here"}}, nil)
	})
	j := newJournal(opts.JournalSize)
	addRoutes(r, logger, requests, opts, j)
	if opts.AdminToken != "" && opts.AdminStore != nil {
		addAdminRoutes(r, logger, requests, opts, j)
	}
	if opts.Metrics != nil {
		r.Method("GET", "/metrics", opts.Metrics.Handler())
	}
	r.Get("/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	return r
}
