package web

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// RequestStore is what the form and the status page need of the store;
// *store.Store satisfies it.
type RequestStore interface {
	CreateRequest(ctx context.Context, n store.NewRequest) (store.Request, error)
	Request(ctx context.Context, id int64) (store.Request, error)
	LogSince(ctx context.Context, id, after int64, limit int) ([]store.LogLine, error)
}

// ConsoleStore is what the operator console needs besides RequestStore;
// *store.Store satisfies it.
type ConsoleStore interface {
	CountByState(ctx context.Context) (map[store.State]int, error)
	Queue(ctx context.Context, limit int) ([]store.Overview, error)
	Running(ctx context.Context, limit int) ([]store.Overview, error)
	RecentFailures(ctx context.Context, limit int) ([]store.Overview, error)
	SearchRequests(ctx context.Context, f store.Search) ([]store.Overview, error)
	Overview(ctx context.Context, id int64) (store.Overview, error)
	ForceState(ctx context.Context, id int64, to store.State, customerMessage string) (store.Request, error)
	SetScenario(ctx context.Context, id int64, scenario *string, holdPolls int) (store.Request, error)
	DeleteRequest(ctx context.Context, id int64) error
	ForgetDeleted(ctx context.Context, ids []int64) error
}

// FileStore is what the pages need of the request files; *files.Store
// satisfies it.
type FileStore interface {
	List(ctx context.Context, id int64) ([]files.Info, error)
	RemoveRequest(ctx context.Context, id int64) error
	StagedSize(id int64, name files.Name) (int64, bool)
}

// SFTPInfo is the SFTP daemon as people reach it.
type SFTPInfo struct {
	Host string
	Port int
	// HostKeys are the daemon's host key fingerprints ("ssh-ed25519
	// SHA256:…"), shown so people can check them on first connection.
	HostKeys []string
}

// Config is what the pages are built from. Zero values get the documented
// defaults.
type Config struct {
	Requests RequestStore
	Files    FileStore
	// Console and AdminToken enable the operator console under /admin/;
	// without either it answers 404.
	Console    ConsoleStore
	AdminToken string
	// Faults are the fault rules the console shows and edits (nil: none).
	Faults *fault.Injector
	// PublicURL is where people reach the server (no trailing slash); its
	// path, if any, prefixes every page's links. Region is the region
	// segment of status URLs ("eu1").
	PublicURL string
	Region    string
	// Rules are create's targets and contracts (the form lists the targets,
	// newest first).
	Rules input.Rules
	// MaxUploadBytes is the largest upload (0: no limit); the form refuses
	// a larger file before sending it.
	MaxUploadBytes int64
	SFTP           SFTPInfo
	// Engine is the upgrade engine's kind ("builtin", "command",
	// "passthrough"): how many steps a run has, for the progress shown.
	Engine string
	// SQLStreams: the server converts dumps to plain SQL (the original/sql
	// and upgraded/sql URLs), so the status page offers them.
	SQLStreams bool
	// DocsURL is the README the form links to (default: the project's
	// repository).
	DocsURL string
	// SessionIdle and SessionMax bound a console session: it ends after
	// SessionIdle without use (default 30 minutes) and SessionMax after
	// sign-in (default 12 hours).
	SessionIdle, SessionMax time.Duration
	// NowFunc is the clock (tests); nil means time.Now.
	NowFunc func() time.Time
}

// Pages serves the pages for people. Mount Routes on the API's router and
// give NotFound as its page for browsers (httpapi.Config).
type Pages struct {
	logger *slog.Logger
	cfg    Config
	base   string // the public URL's path ("" or "/prefix")
	tmpl   map[string]*template.Template
	assets map[string]asset
	words  template.JS // the form's words for problems, as JSON

	sessions *sessions
	limiter  *limiter
}

// New builds the pages. It panics only if the embedded templates do not
// parse, which the tests rule out.
func New(logger *slog.Logger, cfg Config) *Pages {
	if cfg.Region == "" {
		cfg.Region = "eu1"
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.DocsURL == "" {
		cfg.DocsURL = "https://github.com/upgrade-server/upgrade-server"
	}
	if cfg.SessionIdle == 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.SessionMax == 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	p := &Pages{logger: logger.With("component", "web"), cfg: cfg, tmpl: parseTemplates(), assets: loadAssets(),
		words: wordsJSON(), sessions: newSessions(cfg.NowFunc, cfg.SessionIdle, cfg.SessionMax),
		limiter: newLimiter(cfg.NowFunc)}
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		p.base = strings.TrimSuffix(u.Path, "/")
	}
	return p
}

// consoleOn reports whether the operator console is served.
func (p *Pages) consoleOn() bool { return p.cfg.AdminToken != "" && p.cfg.Console != nil }

// Routes adds the pages to the API's router (httpapi.Config.Mounts).
func (p *Pages) Routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(withHeaders)
		r.Get("/", p.handleForm)
		r.Post("/", p.handleFormPost)
		for name, a := range p.assets {
			r.Get("/assets/"+name, handleAsset(a))
		}
		r.Get("/database/{region}/{id}/{key}/status", p.handleStatusPage)
		r.Get("/database/{region}/{id}/{key}/status.json", p.handleStatusJSON)
		if !p.consoleOn() {
			return // /admin/… is then an unknown page
		}
		r.Get("/admin", http.RedirectHandler(p.base+"/admin/", http.StatusMovedPermanently).ServeHTTP)
		r.Get("/admin/sign-in", p.handleSignInPage)
		r.Post("/admin/sign-in", p.handleSignIn)
		r.Group(func(r chi.Router) {
			r.Use(p.requireSession)
			r.Get("/admin/", p.handleDashboard)
			r.Get("/admin/requests", p.handleRequests)
			r.Get("/admin/requests/{id}", p.handleRequest)
			r.Get("/admin/faults", p.handleFaults)
			r.Group(func(r chi.Router) {
				r.Use(p.checkCSRF)
				r.Post("/admin/sign-out", p.handleSignOut)
				r.Post("/admin/requests/{id}/state", p.handleForceState)
				r.Post("/admin/requests/{id}/scenario", p.handleSetScenario)
				r.Post("/admin/requests/{id}/delete", p.handleDelete)
				r.Post("/admin/faults", p.handleAddFault)
				r.Post("/admin/faults/clear", p.handleClearFaults)
				r.Post("/admin/faults/{fid}/remove", p.handleRemoveFault)
			})
		})
	})
}

// withHeaders gives every answer of the pages the security headers, with
// the strictest policy; a page sets its own as it renders.
func withHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w, cspData)
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// The Content-Security-Policy of each kind of page: nothing from
// elsewhere, no inline script or style, no framing, forms only to this
// server; scripts, and calls to this server, only where a page needs them.
const (
	cspStatic = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	cspScript = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// cspData is for what is not a page (scripts, styles, JSON).
	cspData = "default-src 'none'; frame-ancestors 'none'"
)

// secure sets the headers every answer of this package carries.
func secure(w http.ResponseWriter, csp string) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Status URLs hold the request's key: never send them to another site.
	// (Not no-referrer: a browser then sends "Origin: null" with this
	// server's own forms, which the console must refuse.)
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// page is what the layout renders around a page's content.
type page struct {
	Title   string
	Base    string
	Scripts []string
	// Console: the console's header (signed in, with its sign-out form).
	Console *consoleNav
	Body    any
}

type consoleNav struct {
	CSRF string
}

// render writes a page: the named template inside the layout, with the
// security headers and csp. A template error is a 500, logged.
func (p *Pages) render(w http.ResponseWriter, r *http.Request, status int, name, csp string, pg page) {
	pg.Base = p.base
	var buf bytes.Buffer
	if err := p.tmpl[name].ExecuteTemplate(&buf, "layout", pg); err != nil {
		p.internal(w, r, err)
		return
	}
	secure(w, csp)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// NotFound is the page a browser gets for an unknown page, a wrong key or
// a file not there (yet): a small HTML page with a link to the form.
func (p *Pages) NotFound(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusNotFound, "notfound.html", cspStatic, page{Title: "Not found"})
}

// wantsHTML reports whether the client is a browser asking for a page: its
// Accept header names text/html (API clients, v1's included, do not).
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// notFoundJSON is the API's answer to a wrong region, id or key, byte for
// byte (httpapi's writeAnswer of REQUEST:NOT_FOUND), for API clients of the
// status page and status.json.
const notFoundJSON = `{
  "failures": [
    {
      "reason": "REQUEST:NOT_FOUND",
      "message": "No request matches this id and key"
    }
  ],
  "request": null
}
`

// requestNotFound answers a wrong region, id or key: a page for a
// browser, the API's JSON for anyone else.
func (p *Pages) requestNotFound(w http.ResponseWriter, r *http.Request) {
	if wantsHTML(r) {
		p.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	w.Write([]byte(notFoundJSON))
}

// internal logs err with the call's correlation id (X-Request-Id, set by
// the API's middleware) and answers a page that gives the reference, never
// the details. Nothing is written when the client went away.
func (p *Pages) internal(w http.ResponseWriter, r *http.Request, err error) {
	ref := w.Header().Get("X-Request-Id")
	if r.Context().Err() != nil {
		p.logger.Info("client gone before the answer", "correlation_id", ref, "err", err)
		return
	}
	p.logger.Error("internal error", "correlation_id", ref, "err", err)
	var buf bytes.Buffer
	if err := p.tmpl["error.html"].ExecuteTemplate(&buf, "layout", page{Title: "Server error", Base: p.base, Body: ref}); err != nil {
		http.Error(w, "Internal error (reference "+ref+")", http.StatusInternalServerError)
		return
	}
	secure(w, cspStatic)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusInternalServerError)
	w.Write(buf.Bytes())
}

//go:embed templates/*.html
var templateFS embed.FS

// The pages, each parsed with the layout.
var pageNames = []string{"form.html", "status.html", "notfound.html", "error.html", "signin.html", "dashboard.html",
	"requests.html", "request.html", "faults.html", "forbidden.html"}

func parseTemplates() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name))
	}
	return out
}
