package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// artifactRoute is one of the six file URLs of a request.
type artifactRoute struct {
	path string
	// file is the request's file the URL serves ("" for the SQL URLs, which
	// convert sqlOf on the fly).
	file   func(r store.Request) (files.Name, bool)
	sqlOf  func(r store.Request) (files.Name, bool)
	ctype  string
	inline bool
	name   func(r store.Request) string // the download's file name (input.ShownName, never the raw one)
}

// uploadFile is a request's complete upload, if it has one.
func uploadFile(r store.Request) (files.Name, bool) {
	if r.UploadCompletedAt == nil || r.UploadName == nil {
		return "", false // never a partial SFTP upload
	}
	return files.Name(*r.UploadName), true
}

// upgradedFile is a request's upgraded dump: a file in the upload's own
// format, or a set (a directory-format dump) for a request that asked for
// one (Odoo's own client).
func upgradedFile(r store.Request) (files.Name, bool) {
	if r.Output == store.OutputDirectory {
		return files.UpgradedDir, true
	}
	return files.UpgradedArchive, true
}

func fixed(n files.Name) func(store.Request) (files.Name, bool) {
	return func(store.Request) (files.Name, bool) { return n, true }
}

var artifactRoutes = []artifactRoute{
	{path: "original/archive", file: uploadFile, ctype: "application/octet-stream",
		name: func(r store.Request) string { return input.ShownName(r.Filename) }},
	{path: "original/sql", sqlOf: uploadFile, ctype: "application/sql; charset=utf-8",
		name: func(r store.Request) string { return stem(input.ShownName(r.Filename)) + ".sql" }},
	{path: "upgraded/archive", file: upgradedFile, ctype: "application/octet-stream",
		name: func(r store.Request) string { return "upgraded_" + input.ShownName(r.Filename) }},
	{path: "upgraded/sql", sqlOf: upgradedFile, ctype: "application/sql; charset=utf-8",
		name: func(r store.Request) string { return "upgraded_" + stem(input.ShownName(r.Filename)) + ".sql" }},
	{path: "upgraded/notes", file: fixed(files.Notes), ctype: "text/html; charset=utf-8", inline: true,
		name: func(r store.Request) string { return fmt.Sprintf("upgrade_notes_%d.html", r.ID) }},
	{path: "modules/archive", file: fixed(files.Modules), ctype: "application/zip",
		name: func(r store.Request) string { return fmt.Sprintf("modules_%d.zip", r.ID) }},
}

// stem drops the dump extensions of a file name: db.sql.gz -> db.
func stem(name string) string {
	for _, ext := range []string{".gz", ".zip", ".dump", ".cdump", ".backup", ".sql", ".tar", ".pgdump"} {
		if s := strings.TrimSuffix(name, ext); s != "" {
			name = s
		}
	}
	return name
}

// pathRequest authenticates /database/<region>/<id>/<key>/…: a wrong region,
// id or key all look like an unknown request. Each segment is read
// percent-decoded (a key may come with %3D for "="), and the id only in its
// canonical form ("58", never "+58", "058" or " 58"), so a request has one
// URL.
func pathRequest(ctx context.Context, r *http.Request, requests RequestStore, l links) (store.Request, bool, error) {
	region, err1 := url.PathUnescape(chi.URLParam(r, "region"))
	rawID, err2 := url.PathUnescape(chi.URLParam(r, "id"))
	key, err3 := url.PathUnescape(chi.URLParam(r, "key"))
	if err1 != nil || err2 != nil || err3 != nil || region != l.region {
		return store.Request{}, false, nil
	}
	id, ok := input.RequestID(rawID)
	if !ok {
		return store.Request{}, false, nil
	}
	req, err := store.RequestByKey(ctx, requests, id, key)
	if errors.Is(err, store.ErrNotFound) {
		return store.Request{}, false, nil
	}
	return req, err == nil, err
}

// handleArtifact streams a request's file with http.ServeContent (Range,
// If-Range, ETag) once it exists, from local disk or object storage alike,
// and answers 404 with a JSON failure before. A browser (Accept:
// text/html) gets the page of browserNotFound instead, when set, for a
// wrong key as for a file not there yet.
func handleArtifact(logger *slog.Logger, requests RequestStore, fs FileStore, l links, sql SQLStreamFunc, m *metrics.Metrics,
	browserNotFound http.Handler, a artifactRoute) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		notFound := func(f failure) {
			if browserNotFound != nil && wantsHTML(r) {
				browserNotFound.ServeHTTP(w, r)
				return
			}
			writeAnswer(w, r, logger, http.StatusNotFound, []failure{f}, nil)
		}
		req, ok, err := pathRequest(r.Context(), r, requests, l)
		if err != nil {
			writeInternal(w, r, logger, http.StatusInternalServerError, err)
			return
		}
		if !ok {
			notFound(requestNotFound())
			return
		}
		notYet := func() {
			notFound(failure{Reason: reasonFileNotFound,
				Message: "This file is not available (yet) for request " + strconv.FormatInt(req.ID, 10)})
		}
		if a.sqlOf != nil {
			streamSQL(w, r, logger, fs, sql, m, req, a, notYet)
			return
		}
		name, ok := a.file(req)
		if !ok {
			notYet()
			return
		}
		if name.IsSet() {
			// A folder is never packed into an archive on the fly.
			notFound(failure{Reason: reasonFileNotFound, Message: "This dump of request " + strconv.FormatInt(req.ID, 10) +
				" is a directory-format dump (a folder of files), not one file: get it as SQL (the sql URL) or with Odoo's upgrade script"})
			return
		}
		o, err := fs.Open(r.Context(), req.ID, name)
		if errors.Is(err, files.ErrNotExist) {
			notYet()
			return
		}
		if err != nil {
			writeInternal(w, r, logger, http.StatusInternalServerError, err)
			return
		}
		defer o.Close()
		info := o.Info()
		etag := fmt.Sprintf(`"%x-%x"`, info.Size, info.ModTime.UnixNano())
		if info.ETag != "" {
			etag = `"` + strings.Trim(info.ETag, `"`) + `"`
		}
		if a.path == "original/archive" && req.UploadSHA256 != nil && req.UploadSize != nil && *req.UploadSize == info.Size {
			etag = `"` + *req.UploadSHA256 + `"`
		}
		disposition := "attachment"
		if a.inline {
			disposition = "inline"
		}
		w.Header().Set("Content-Type", a.ctype)
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "private, no-cache")
		w.Header().Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": a.name(req)}))
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", info.ModTime, o)
		m.Bytes("http", "down", cw.n)
	})
}

// streamSQL converts a dump to plain SQL on the fly (no Range: the size is
// not known in advance).
func streamSQL(w http.ResponseWriter, r *http.Request, logger *slog.Logger, fs FileStore, sql SQLStreamFunc, m *metrics.Metrics,
	req store.Request, a artifactRoute, notYet func()) {
	name, ok := a.sqlOf(req)
	if !ok || sql == nil {
		notYet()
		return
	}
	if _, err := fs.Stat(r.Context(), req.ID, name); err != nil {
		if !errors.Is(err, files.ErrNotExist) {
			logger.Warn("stat for an SQL stream", "request_id", req.ID, "err", err)
		}
		notYet()
		return
	}
	rc, err := sql(r.Context(), req.ID, name, req.Compressions)
	if err != nil {
		logger.Info("no SQL stream", "request_id", req.ID, "err", err)
		notYet()
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Cache-Control", "private, no-cache")
	w.Header().Set("Accept-Ranges", "none")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": a.name(req)}))
	if r.Method == http.MethodHead {
		return
	}
	n, err := io.Copy(w, rc)
	m.Bytes("http", "down", n)
	if err != nil {
		logger.Info("SQL stream interrupted", "request_id", req.ID, "err", err)
	}
}

func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	}
}

func handleReadyz(logger *slog.Logger, requests RequestStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := requests.Ping(r.Context()); err != nil {
			logger.Warn("readiness: database unreachable", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":"database unreachable"}` + "\n"))
			return
		}
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	}
}

func handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	}
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}
