package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// The operator console: /admin/, behind a sign-in with the admin token.
// The token is typed into a form and compared in constant time; the
// browser then holds only a random session id, in an HttpOnly,
// SameSite=Strict cookie (Secure over HTTPS). Every form that changes
// something carries the session's CSRF token, and must come from this
// server's own pages (Origin, Sec-Fetch-Site).

const cookieName = "upgrade_console"

type ctxKey int

const sessionKey ctxKey = iota

func sessionOf(ctx context.Context) session {
	s, _ := ctx.Value(sessionKey).(session)
	return s
}

// httpsFor reports whether the browser reaches this server over HTTPS.
func (p *Pages) httpsFor(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(p.cfg.PublicURL, "https://")
}

func (p *Pages) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: p.base + "/admin/", MaxAge: maxAge,
		HttpOnly: true, Secure: p.httpsFor(r), SameSite: http.SameSiteStrictMode})
}

func cookieValue(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// requireSession lets signed-in browsers through; others go to the
// sign-in page (told when their session expired).
func (p *Pages) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, state := p.sessions.get(cookieValue(r))
		if state != sessionValid {
			if cookieValue(r) != "" {
				p.setCookie(w, r, "", -1)
			}
			to := p.base + "/admin/sign-in"
			if state == sessionExpired {
				to += "?expired=1"
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey, sess)))
	})
}

// sameOrigin reports whether a form was sent from this server's own pages:
// a browser says where a request comes from (Sec-Fetch-Site, Origin); a
// client that says nothing (no browser) still needs the CSRF token.
func (p *Pages) sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if origin == scheme+"://"+r.Host {
		return true
	}
	if u, err := url.Parse(p.cfg.PublicURL); err == nil && u.Host != "" && origin == u.Scheme+"://"+u.Host {
		return true
	}
	return false
}

// checkCSRF refuses a state-changing form without the session's token or
// from another site.
func (p *Pages) checkCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if !p.sameOrigin(r) || r.ParseForm() != nil || !equalSecret(r.PostForm.Get("csrf"), sessionOf(r.Context()).csrf) {
			p.render(w, r, http.StatusForbidden, "forbidden.html", cspStatic, page{Title: "Refused"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientAddr is the address sign-in failures are counted by: the peer's
// (forwarded-for headers can be made up).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type signInView struct {
	Error   string
	Notice  string
	Expired bool
}

// signInRefused is the one answer to a wrong token, whether it was looked
// at or the address must wait.
const signInRefused = "Sign-in refused: the token is wrong, or there were too many attempts from your address. Wait a few seconds and try again."

func (p *Pages) handleSignInPage(w http.ResponseWriter, r *http.Request) {
	if _, state := p.sessions.get(cookieValue(r)); state == sessionValid {
		http.Redirect(w, r, p.base+"/admin/", http.StatusSeeOther)
		return
	}
	v := signInView{Expired: r.URL.Query().Get("expired") != ""}
	if r.URL.Query().Get("out") != "" {
		v.Notice = "You are signed out."
	}
	p.render(w, r, http.StatusOK, "signin.html", cspStatic, page{Title: "Sign in", Body: v})
}

// handleSignIn checks the token (never logged, never shown again): a
// right one starts a session; a wrong one gets one generic answer, and
// after a few from one address the next attempts wait, without the token
// being looked at.
func (p *Pages) handleSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if !p.sameOrigin(r) || r.ParseForm() != nil {
		p.render(w, r, http.StatusForbidden, "forbidden.html", cspStatic, page{Title: "Refused"})
		return
	}
	addr := clientAddr(r)
	if wait := p.limiter.wait(addr); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		p.render(w, r, http.StatusTooManyRequests, "signin.html", cspStatic, page{Title: "Sign in", Body: signInView{Error: signInRefused}})
		return
	}
	if !equalSecret(r.PostForm.Get("token"), p.cfg.AdminToken) {
		p.limiter.failed(addr)
		p.logger.Warn("console: sign-in refused", "client", addr)
		p.render(w, r, http.StatusUnauthorized, "signin.html", cspStatic, page{Title: "Sign in", Body: signInView{Error: signInRefused}})
		return
	}
	p.limiter.succeeded(addr)
	id, _ := p.sessions.start()
	p.setCookie(w, r, id, 0)
	p.logger.Info("console: signed in", "client", addr)
	http.Redirect(w, r, p.base+"/admin/", http.StatusSeeOther)
}

func (p *Pages) handleSignOut(w http.ResponseWriter, r *http.Request) {
	p.sessions.end(cookieValue(r))
	p.setCookie(w, r, "", -1)
	http.Redirect(w, r, p.base+"/admin/sign-in?out=1", http.StatusSeeOther)
}

// renderConsole renders a console page for the signed-in session.
func (p *Pages) renderConsole(w http.ResponseWriter, r *http.Request, status int, name, title string, body any) {
	p.render(w, r, status, name, cspStatic, page{Title: title, Console: &consoleNav{CSRF: sessionOf(r.Context()).csrf}, Body: body})
}

// row is a request as the console lists it.
type row struct {
	ID        int64
	Filename  string
	Contract  string
	State     store.State
	Message   string
	Size      string
	Upgraded  string
	Created   string
	Worker    string
	Elapsed   string
	Waiting   string
	StatusURL string
}

func (p *Pages) row(o store.Overview, now time.Time) row {
	out := row{ID: o.ID, Filename: input.ShownName(o.Filename), Contract: o.Contract, State: o.State,
		Created: o.CreatedAt.UTC().Format("2006-01-02 15:04"), Size: "—", Upgraded: "—",
		StatusURL: p.publicStatus(o.Request) + "/status"}
	if o.UploadSize != nil {
		out.Size = humanBytes(*o.UploadSize)
	}
	if o.UpgradedSize != nil {
		out.Upgraded = humanBytes(*o.UpgradedSize)
	}
	if o.CustomerMessage != nil {
		out.Message = *o.CustomerMessage
	}
	if o.LeaseOwner != nil {
		out.Worker = *o.LeaseOwner
	}
	if o.ProcessedAt != nil {
		out.Elapsed = clock(now.Sub(*o.ProcessedAt))
	}
	if o.QueuedAt != nil {
		out.Waiting = clock(now.Sub(*o.QueuedAt))
	}
	return out
}

func (p *Pages) rows(list []store.Overview) []row {
	now := p.cfg.NowFunc()
	out := make([]row, 0, len(list))
	for _, o := range list {
		out = append(out, p.row(o, now))
	}
	return out
}

// allStates are the stored states, in the order of the lifecycle.
var allStates = []store.State{store.StateDraft, store.StateQueued, store.StateProcessing, store.StateTesting,
	store.StateDone, store.StateDelivered, store.StateFailed, store.StateCancelled}

type stateCount struct {
	State store.State
	N     int
}

type dashboardView struct {
	Counts   []stateCount
	Total    int
	Queue    []row
	Running  []row
	Failures []row
	States   []store.State
}

func (p *Pages) handleDashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := p.cfg.Console
	counts, err := c.CountByState(ctx)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	queue, err := c.Queue(ctx, 50)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	running, err := c.Running(ctx, 50)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	failures, err := c.RecentFailures(ctx, 10)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	v := dashboardView{Queue: p.rows(queue), Running: p.rows(running), Failures: p.rows(failures), States: allStates}
	for _, s := range allStates {
		v.Counts = append(v.Counts, stateCount{s, counts[s]})
		v.Total += counts[s]
	}
	p.renderConsole(w, r, http.StatusOK, "dashboard.html", "Console", v)
}

type requestsView struct {
	Notice string
	Query  string
	State  store.State
	States []store.State
	Rows   []row
	Limit  int
}

func (p *Pages) handleRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := requestsView{Query: strings.TrimSpace(q.Get("q")), State: knownState(q.Get("state")), States: allStates, Limit: 200}
	if id, ok := input.RequestID(q.Get("deleted")); ok {
		v.Notice = fmt.Sprintf("Request %d was deleted, with its files.", id)
	}
	list, err := p.cfg.Console.SearchRequests(r.Context(), store.Search{Text: v.Query, State: v.State, Limit: v.Limit})
	if err != nil {
		p.internal(w, r, err)
		return
	}
	v.Rows = p.rows(list)
	p.renderConsole(w, r, http.StatusOK, "requests.html", "Requests", v)
}

func knownState(s string) store.State {
	for _, st := range allStates {
		if string(st) == s {
			return st
		}
	}
	return ""
}

type requestView struct {
	Row      row
	R        store.Overview
	Scenario string
	Log      []logLine
	States   []store.State
	Notice   string
	Error    string
	// Form values kept after a refusal.
	FormState, FormMessage, FormScenario string
}

// consoleRequest reads the {id} of the path: the request, or false after
// answering 404.
func (p *Pages) consoleRequest(w http.ResponseWriter, r *http.Request) (store.Overview, bool) {
	id, ok := input.RequestID(chi.URLParam(r, "id"))
	if !ok {
		p.NotFound(w, r)
		return store.Overview{}, false
	}
	o, err := p.cfg.Console.Overview(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		p.NotFound(w, r)
		return store.Overview{}, false
	}
	if err != nil {
		p.internal(w, r, err)
		return store.Overview{}, false
	}
	return o, true
}

// notices are the words after a done action (?done=…).
var notices = map[string]string{
	"state":    "The state was forced.",
	"scenario": "The scenario was set.",
	"noscen":   "The scenario was removed.",
}

func (p *Pages) handleRequest(w http.ResponseWriter, r *http.Request) {
	o, ok := p.consoleRequest(w, r)
	if !ok {
		return
	}
	p.showRequest(w, r, http.StatusOK, o, requestView{Notice: notices[r.URL.Query().Get("done")]})
}

func (p *Pages) showRequest(w http.ResponseWriter, r *http.Request, status int, o store.Overview, v requestView) {
	lines, err := p.cfg.Requests.LogSince(r.Context(), o.ID, 0, 1000)
	if err != nil {
		p.internal(w, r, err)
		return
	}
	for _, l := range lines {
		v.Log = append(v.Log, logLine{ID: l.ID, At: l.At.UTC().Format("2006-01-02 15:04:05"), Level: l.Level, Message: l.Message})
	}
	v.Row, v.R, v.States = p.row(o, p.cfg.NowFunc()), o, allStates
	if o.Scenario != nil {
		v.Scenario = *o.Scenario
	}
	if v.FormState == "" {
		v.FormState = string(o.State)
	}
	if v.FormScenario == "" {
		v.FormScenario = v.Scenario
	}
	p.renderConsole(w, r, status, "request.html", fmt.Sprintf("Request %d", o.ID), v)
}

// confirmed reports whether the form's confirmation box was ticked.
func confirmed(r *http.Request) bool { return r.PostForm.Get("confirm") == "yes" }

const notConfirmed = "Nothing was done: tick the box to confirm."

func (p *Pages) handleForceState(w http.ResponseWriter, r *http.Request) {
	o, ok := p.consoleRequest(w, r)
	if !ok {
		return
	}
	to := knownState(r.PostForm.Get("state"))
	msg := strings.TrimSpace(r.PostForm.Get("message"))
	v := requestView{FormState: r.PostForm.Get("state"), FormMessage: msg}
	switch {
	case to == "":
		v.Error = "Choose a state from the list."
	case strings.ContainsRune(msg, 0):
		v.Error = "The message cannot hold a NUL character."
	case !confirmed(r):
		v.Error = notConfirmed
	}
	if v.Error != "" {
		p.showRequest(w, r, http.StatusBadRequest, o, v)
		return
	}
	if _, err := p.cfg.Console.ForceState(r.Context(), o.ID, to, msg); err != nil {
		p.internal(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("%s/admin/requests/%d?done=state", p.base, o.ID), http.StatusSeeOther)
}

// handleSetScenario sets a request's scenario as the admin API does (the
// "scenario:" prefix optional; empty removes it).
func (p *Pages) handleSetScenario(w http.ResponseWriter, r *http.Request) {
	o, ok := p.consoleRequest(w, r)
	if !ok {
		return
	}
	text := strings.TrimSpace(r.PostForm.Get("scenario"))
	v := requestView{FormScenario: text}
	var sc *string
	polls := 0
	switch {
	case !confirmed(r):
		v.Error = notConfirmed
	case strings.ContainsRune(text, 0):
		v.Error = "The scenario cannot hold a NUL character."
	case text != "":
		if !scenario.Is(text) {
			text = scenario.Prefix + text
		}
		parsed, err := scenario.Parse(text)
		if err != nil {
			v.Error = "This scenario cannot be used: " + err.Error() + "."
			break
		}
		sc, polls = &text, parsed.Polls
	}
	if v.Error != "" {
		p.showRequest(w, r, http.StatusBadRequest, o, v)
		return
	}
	if _, err := p.cfg.Console.SetScenario(r.Context(), o.ID, sc, polls); err != nil {
		p.internal(w, r, err)
		return
	}
	done := "scenario"
	if sc == nil {
		done = "noscen"
	}
	http.Redirect(w, r, fmt.Sprintf("%s/admin/requests/%d?done=%s", p.base, o.ID, done), http.StatusSeeOther)
}

// handleDelete removes a request in the admin API's order: the record
// first (recorded as deleted), then its files, then the deletion record;
// a crash in between leaves the files to the start-up sweep, never a
// record without its files.
func (p *Pages) handleDelete(w http.ResponseWriter, r *http.Request) {
	o, ok := p.consoleRequest(w, r)
	if !ok {
		return
	}
	if !confirmed(r) {
		p.showRequest(w, r, http.StatusBadRequest, o, requestView{Error: notConfirmed})
		return
	}
	if err := p.cfg.Console.DeleteRequest(r.Context(), o.ID); err != nil {
		p.internal(w, r, err)
		return
	}
	ctx := context.WithoutCancel(r.Context()) // the record is gone: finish with the files
	if err := p.cfg.Files.RemoveRequest(ctx, o.ID); err != nil {
		p.internal(w, r, err)
		return
	}
	if err := p.cfg.Console.ForgetDeleted(ctx, []int64{o.ID}); err != nil {
		p.internal(w, r, err)
		return
	}
	p.logger.Info("console: request deleted", "request_id", o.ID)
	http.Redirect(w, r, fmt.Sprintf("%s/admin/requests?deleted=%d", p.base, o.ID), http.StatusSeeOther)
}

type faultsView struct {
	Rules  []fault.Rule
	Seed   uint64
	Kinds  []string
	Error  string
	Notice string
	Form   map[string]string // what was typed, after a refusal
}

var faultKinds = []string{fault.Latency, fault.HTTPError, fault.ServerError, fault.DropUpload, fault.SFTPDisconnect, fault.SFTPThrottle}

func (p *Pages) faultsView() faultsView {
	v := faultsView{Kinds: faultKinds, Form: map[string]string{}}
	if p.cfg.Faults != nil {
		v.Rules, v.Seed = p.cfg.Faults.List()
	}
	return v
}

var faultNotices = map[string]string{"added": "The rule was added.", "cleared": "Every rule was removed.", "removed": "The rule was removed."}

func (p *Pages) handleFaults(w http.ResponseWriter, r *http.Request) {
	v := p.faultsView()
	v.Notice = faultNotices[r.URL.Query().Get("done")]
	p.renderConsole(w, r, http.StatusOK, "faults.html", "Fault rules", v)
}

// handleAddFault adds a rule from the form, checked by the injector as the
// admin API's rules are.
func (p *Pages) handleAddFault(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	v := p.faultsView()
	for _, k := range []string{"kind", "method", "request_id", "probability", "times", "latency_ms", "status", "after_bytes", "rate_bytes_per_sec"} {
		v.Form[k] = strings.TrimSpace(f.Get(k))
	}
	rule := fault.Rule{Kind: v.Form["kind"], Method: v.Form["method"]}
	var bad []string
	num := func(name string, set func(string) error) {
		if s := v.Form[name]; s != "" {
			if err := set(s); err != nil {
				bad = append(bad, name)
			}
		}
	}
	num("request_id", func(s string) (err error) { rule.RequestID, err = strconv.ParseInt(s, 10, 64); return })
	num("probability", func(s string) (err error) { rule.Probability, err = strconv.ParseFloat(s, 64); return })
	num("times", func(s string) (err error) { rule.Times, err = strconv.Atoi(s); return })
	num("latency_ms", func(s string) (err error) { rule.LatencyMS, err = strconv.Atoi(s); return })
	num("status", func(s string) (err error) { rule.Status, err = strconv.Atoi(s); return })
	num("after_bytes", func(s string) (err error) { rule.AfterBytes, err = strconv.ParseInt(s, 10, 64); return })
	num("rate_bytes_per_sec", func(s string) (err error) { rule.RateBytesPerSec, err = strconv.ParseInt(s, 10, 64); return })
	switch {
	case p.cfg.Faults == nil:
		v.Error = "Fault injection is not available in this process."
	case len(bad) > 0:
		v.Error = "Not a number: " + strings.Join(bad, ", ") + "."
	default:
		if _, err := p.cfg.Faults.Add(rule); err != nil {
			v.Error = "The rule was refused: " + err.Error() + "."
		}
	}
	if v.Error != "" {
		p.renderConsole(w, r, http.StatusBadRequest, "faults.html", "Fault rules", v)
		return
	}
	http.Redirect(w, r, p.base+"/admin/faults?done=added", http.StatusSeeOther)
}

func (p *Pages) handleClearFaults(w http.ResponseWriter, r *http.Request) {
	if !confirmed(r) {
		v := p.faultsView()
		v.Error = notConfirmed
		p.renderConsole(w, r, http.StatusBadRequest, "faults.html", "Fault rules", v)
		return
	}
	if p.cfg.Faults != nil {
		p.cfg.Faults.Clear()
	}
	http.Redirect(w, r, p.base+"/admin/faults?done=cleared", http.StatusSeeOther)
}

func (p *Pages) handleRemoveFault(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(chi.URLParam(r, "fid"))
	if err != nil || p.cfg.Faults == nil || !p.cfg.Faults.Remove(id) {
		p.NotFound(w, r)
		return
	}
	http.Redirect(w, r, p.base+"/admin/faults?done=removed", http.StatusSeeOther)
}
