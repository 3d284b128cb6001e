package httpapi

import (
	"log/slog"

	"github.com/go-chi/chi/v5"
)

// addRoutes is the whole HTTP surface on one screen.
func addRoutes(r chi.Router, logger *slog.Logger, requests RequestStore, opts Options, j *journal) {
	v1 := func(pattern string, h methodFunc, methods ...string) {
		if len(methods) == 0 {
			methods = []string{"GET", "POST"}
		}
		for _, m := range methods {
			r.Method(m, "/database/v1/"+pattern, handleMethod(logger, pattern, h, j, opts.Metrics, opts.Faults))
		}
	}
	v1("create", handleCreate(requests, opts))
	v1("upload", handleUpload(logger, requests, opts), "GET", "POST", "PUT")
	v1("request_sftp_access", handleRequestSFTPAccess(requests, opts))
	v1("process", handleProcess(requests, opts))
	v1("skip_test", handleSkipTest(requests, opts))
	v1("status", handleStatus(requests, opts))

	r.Get("/database/{region}/{id}/{key}/status", handleStatusPage(logger, requests, opts))
	for _, f := range artifactRoutes {
		r.Method("GET", "/database/{region}/{id}/{key}/"+f.path, handleArtifact(logger, requests, opts, f))
		r.Method("HEAD", "/database/{region}/{id}/{key}/"+f.path, handleArtifact(logger, requests, opts, f))
	}

	r.Get("/healthz", handleHealthz())
	r.Get("/readyz", handleReadyz(logger, requests))
	// Admin API (/admin/v1/...) and /metrics: see admin.go and handler.go.
}
