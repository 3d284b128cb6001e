package httpapi

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
)

// addRoutes is the whole HTTP surface on one screen. Each handler gets
// the dependencies it uses, no more.
func addRoutes(r chi.Router, logger *slog.Logger, cfg Config) {
	reqs, fs := cfg.Requests, cfg.Files
	links := links{public: cfg.PublicURL, region: cfg.Region}
	rec := recorder{links: links, now: cfg.NowFunc, staged: fs.StagedSize}
	sftp := sftpView{info: cfg.SFTP}
	j := newJournal(cfg.JournalSize)
	up := uploader{logger: logger, requests: reqs, files: fs, uploads: cfg.Uploads, max: cfg.MaxUploadBytes,
		lease: cfg.UploadLease, metrics: cfg.Metrics}

	v1 := func(pattern string, h methodFunc, methods ...string) {
		if len(methods) == 0 {
			methods = []string{"GET", "POST"}
		}
		for _, m := range methods {
			r.Method(m, "/database/v1/"+pattern, handleMethod(logger, pattern, h, j, cfg.Metrics, cfg.Faults))
		}
	}
	v1("create", handleCreate(reqs, fs, cfg.Rules, rec))
	v1("upload", handleUpload(reqs, up, rec), "GET", "POST", "PUT")
	v1("request_sftp_access", handleRequestSFTPAccess(reqs, sftp, rec))
	v1("process", handleProcess(reqs, rec))
	v1("skip_test", handleSkipTest(reqs, rec))
	v1("status", handleStatus(reqs, rec))
	v1("upgrade", handleUpgrade(reqs, fs, cfg.Rules, up, rec), "POST", "PUT")

	// The status page (/database/{region}/{id}/{key}/status) is the pages'
	// (cfg.Mounts); the files are the API's.
	for _, f := range artifactRoutes {
		h := handleArtifact(logger, reqs, fs, links, cfg.SQLStream, cfg.Metrics, cfg.BrowserNotFound, f)
		r.Method("GET", "/database/{region}/{id}/{key}/"+f.path, h)
		r.Method("HEAD", "/database/{region}/{id}/{key}/"+f.path, h)
	}

	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(logger, reqs))
	r.Get("/openapi.json", handleOpenAPI())
	if cfg.Metrics != nil {
		r.Method("GET", "/metrics", cfg.Metrics.Handler())
	}

	if cfg.AdminToken != "" && cfg.Admin != nil {
		admin := cfg.Admin
		view := adminViewer{rec: rec}
		r.Route("/admin/v1", func(r chi.Router) {
			r.Use(requireToken(cfg.AdminToken))
			r.Get("/requests", handleAdminList(logger, admin, view))
			r.Get("/requests/{id}", handleAdminShow(logger, reqs, view))
			r.Post("/requests/{id}/state", handleAdminState(logger, reqs, admin, view))
			r.Put("/requests/{id}/scenario", handleAdminScenario(logger, reqs, admin, view))
			r.Delete("/requests/{id}", handleAdminDelete(logger, reqs, admin, fs))
			r.Post("/reset", handleAdminReset(logger, admin, fs, j))
			r.Get("/export", handleExport(logger, admin, fs))
			r.Post("/import", handleImport(logger, admin, fs))
			r.Get("/faults", handleFaultsList(logger, cfg.Faults))
			r.Post("/faults", handleFaultsAdd(logger, cfg.Faults))
			r.Delete("/faults", handleFaultsClear(logger, cfg.Faults))
			r.Delete("/faults/{fid}", handleFaultsRemove(logger, cfg.Faults))
			r.Put("/faults/seed", handleFaultsSeed(logger, cfg.Faults))
			r.Get("/journal", handleJournal(logger, j))
		})
	}

	for _, mount := range cfg.Mounts {
		mount(r)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if cfg.BrowserNotFound != nil && wantsHTML(r) {
			cfg.BrowserNotFound.ServeHTTP(w, r)
			return
		}
		writeAnswer(w, r, logger, http.StatusNotFound, []failure{{Reason: reasonRouteNotFound,
			Message: "No such endpoint: " + r.URL.Path}}, nil)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeAnswer(w, r, logger, http.StatusMethodNotAllowed, []failure{{Reason: reasonMethodNotAllowed,
			Message: "Method " + r.Method + " is not allowed here"}}, nil)
	})
}

// wantsHTML reports whether the client is a browser asking for a page:
// its Accept header names text/html (API clients, v1's included, do not).
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
