package httpapi

import (
	"bytes"
	_ "embed"
	"html/template"
	"log/slog"
	"net/http"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

//go:embed status.html.tmpl
var statusTemplateText string

// statusTemplate is parsed once per handler; templates are immutable.
func parseStatusTemplate() *template.Template {
	return template.Must(template.New("status").Parse(statusTemplateText))
}

type pageLink struct {
	Label, URL string
}

type statusPage struct {
	R        wireRequest
	SFTP     *sftpAccess
	HostKeys []string
	Active   bool
	Refresh  int
	Links    []pageLink
	Events   []store.Event
	Uploaded bool
}

// handleStatusPage renders status_url: an HTML page for people that
// refreshes itself while the request moves.
func handleStatusPage(logger *slog.Logger, requests RequestStore, fs FileStore, l links, rec recorder, sftp sftpView) http.HandlerFunc {
	tmpl := parseStatusTemplate()
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok, err := pathRequest(r.Context(), r, requests, l)
		if err != nil {
			writeInternal(w, r, logger, http.StatusInternalServerError, err)
			return
		}
		if !ok {
			writeAnswer(w, r, logger, http.StatusNotFound, []failure{requestNotFound()}, nil)
			return
		}
		events, err := requests.Events(r.Context(), req.ID, 200)
		if err != nil {
			writeInternal(w, r, logger, http.StatusInternalServerError, err)
			return
		}
		page := statusPage{R: rec.record(req), Events: events, Uploaded: req.UploadCompletedAt != nil, HostKeys: sftp.info.HostKeys}
		if req.SFTPGrantedAt != nil {
			a := sftp.access(req)
			page.SFTP = &a
		}
		switch req.State {
		case store.StateDraft:
			page.Active, page.Refresh = true, 15
		case store.StateQueued, store.StateProcessing, store.StateTesting:
			page.Active, page.Refresh = true, 5
		}
		for _, a := range artifactRoutes {
			if a.file == nil {
				continue // the SQL streams: not offered on the page
			}
			if name, ok := a.file(req); ok {
				if _, err := fs.Stat(r.Context(), req.ID, name); err == nil {
					page.Links = append(page.Links, pageLink{Label: a.name(req), URL: l.url(req, a.path)})
				}
			}
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, page); err != nil {
			writeInternal(w, r, logger, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Write(buf.Bytes())
	}
}
