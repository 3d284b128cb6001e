package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/upgrade-server/upgrade-server/internal/fault"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
	"github.com/upgrade-server/upgrade-server/internal/web"
)

// pages is the pages alone on a router, on a real store, with a clock the
// test moves.
type pages struct {
	srv   *httptest.Server
	store *store.Store
	files *files.Store
	logs  *logBuffer

	mu  sync.Mutex
	now time.Time
}

func (p *pages) clock() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.now
}

func (p *pages) advance(d time.Duration) {
	p.mu.Lock()
	p.now = p.now.Add(d)
	p.mu.Unlock()
}

func newPages(t *testing.T, mod ...func(*web.Config)) *pages {
	t.Helper()
	st, _ := pgtest.NewStore(t)
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := &pages{store: st, files: fs, logs: &logBuffer{}, now: time.Now()}
	p.srv = httptest.NewUnstartedServer(nil)
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	cfg := web.Config{Requests: st, Files: fs, Console: st, AdminToken: adminToken, Faults: fault.New(1), PublicURL: p.srv.URL,
		Rules:          input.Rules{Targets: []string{"16.0", "17.0"}, ContractValidFunc: func(c string) bool { return c == "M1" }},
		MaxUploadBytes: 1 << 20, SFTP: web.SFTPInfo{Host: "sftp.example.test", Port: 2200, HostKeys: []string{"ssh-ed25519 SHA256:abc"}},
		Engine: "passthrough", SQLStreams: true, NowFunc: p.clock}
	for _, m := range mod {
		m(&cfg)
	}
	pg := web.New(slog.New(slog.NewTextHandler(io.MultiWriter(p.logs, testLog(t)), nil)), cfg)
	r := chi.NewRouter()
	pg.Routes(r)
	r.NotFound(pg.NotFound)
	p.srv.Config.Handler = r
	return p
}

// draft stores a request, with an upload of dump when not nil.
func (p *pages) draft(t *testing.T, dump []byte) store.Request {
	t.Helper()
	ctx := context.Background()
	r, err := p.store.CreateRequest(ctx, store.NewRequest{Key: token.Key(), Contract: "M1", Email: "a@example.com", Target: "17.0",
		Aim: "test", Filename: "db_name.dump"})
	if err != nil {
		t.Fatal(err)
	}
	if dump == nil {
		return r
	}
	name := files.NewUploadName()
	got, err := p.files.Receive(ctx, r.ID, name, bytes.NewReader(dump), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.store.BeginUpload(ctx, r.ID, "u", time.Minute); err != nil {
		t.Fatal(err)
	}
	if r, _, err = p.store.CompleteUpload(ctx, r.ID, "u", store.Upload{Name: string(name), Size: got.Size, SHA256: got.SHA256}); err != nil {
		t.Fatal(err)
	}
	p.store.AddEvent(ctx, r.ID, "info", "Upload received over HTTP.")
	return r
}

func (p *pages) statusURL(r store.Request) string {
	return fmt.Sprintf("%s/database/eu1/%d/%s/status", p.srv.URL, r.ID, r.Key)
}

// signIn signs a client in and returns the CSRF token of its session.
func (p *pages) signIn(t *testing.T, client *http.Client) string {
	t.Helper()
	resp, err := client.PostForm(p.srv.URL+"/admin/sign-in", url.Values{"token": {adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: HTTP %d", resp.StatusCode)
	}
	_, b := get(t, client, p.srv.URL+"/admin/")
	m := csrfField.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no CSRF token on the console:\n%s", b)
	}
	return string(m[1])
}

func (p *pages) post(t *testing.T, client *http.Client, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := client.PostForm(p.srv.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestSecurityHeaders: every answer carries the headers, and each kind of
// page the Content-Security-Policy it needs: no inline code anywhere,
// scripts and calls to this server only where the browser must act.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	p := newPages(t)
	r := p.draft(t, []byte("dump"))
	client := noRedirects(t)
	p.signIn(t, client)
	const (
		script = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
		static = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
		data   = "default-src 'none'; frame-ancestors 'none'"
	)
	for _, c := range []struct{ path, csp, ctype string }{
		{"/", script, "text/html; charset=utf-8"},
		{fmt.Sprintf("/database/eu1/%d/%s/status", r.ID, r.Key), script, "text/html; charset=utf-8"},
		{fmt.Sprintf("/database/eu1/%d/%s/status.json", r.ID, r.Key), data, "application/json"},
		{"/nope", static, "text/html; charset=utf-8"},
		{"/admin/sign-in", static, "text/html; charset=utf-8"},
		{"/admin/", static, "text/html; charset=utf-8"},
		{"/admin/requests", static, "text/html; charset=utf-8"},
		{fmt.Sprintf("/admin/requests/%d", r.ID), static, "text/html; charset=utf-8"},
		{"/admin/faults", static, "text/html; charset=utf-8"},
		{"/assets/form.js", data, "text/javascript; charset=utf-8"},
		{"/assets/style.css", data, "text/css; charset=utf-8"},
	} {
		cl := client
		if c.path == "/admin/sign-in" {
			cl = nil // signed out
		}
		resp, _ := get(t, cl, p.srv.URL+c.path, "Accept", browserAccept)
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); got != c.csp {
			t.Errorf("%s: CSP %q", c.path, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("Referrer-Policy") != "same-origin" || h.Get("Content-Type") != c.ctype {
			t.Errorf("%s: headers %v", c.path, h)
		}
		if strings.HasPrefix(c.ctype, "text/html") && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", c.path, h.Get("Cache-Control"))
		}
	}
	// Redirects too.
	resp, _ := get(t, noRedirects(t), p.srv.URL+"/admin/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Content-Security-Policy") != data ||
		resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("a redirect: HTTP %d %v", resp.StatusCode, resp.Header)
	}
}

// TestFormWithoutJavaScript: the form sent by a browser without
// JavaScript goes through create's checks; refusals come back next to
// their fields, in words, with what was typed; a good form creates the
// request and leads to its status page.
func TestFormWithoutJavaScript(t *testing.T) {
	t.Parallel()
	p := newPages(t)
	client := noRedirects(t)
	resp, body := p.post(t, client, "/", url.Values{"contract": {"M2"}, "email": {"not an address"}, "target": {"17.0"},
		"aim": {"test"}, "dump": {""}})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	for _, want := range []string{
		`<p class="error" id="contract-error">This server does not know this contract.`,
		`<p class="error" id="email-error">Enter an e-mail address such as name@example.com.</p>`,
		`<p class="error" id="dump-error">Choose the dump file to upload.</p>`,
		`<p class="error" id="target-error" hidden></p>`,
		`value="M2"`, `value="not an address"`, `<option value="17.0" selected>`,
		`id="contract" name="contract" value="M2" required autocomplete="off" spellcheck="false" autocapitalize="off"
      aria-describedby="contract-hint contract-error" aria-invalid="true">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if list, _ := p.store.SearchRequests(context.Background(), store.Search{}); len(list) != 0 {
		t.Fatalf("a refused form created %d requests", len(list))
	}

	resp, _ = p.post(t, client, "/", url.Values{"contract": {"M1"}, "email": {"jane@example.com"}, "target": {"16.0"},
		"aim": {"production"}, "dump": {"sales 2024.dump"}})
	list, _ := p.store.SearchRequests(context.Background(), store.Search{})
	if resp.StatusCode != http.StatusSeeOther || len(list) != 1 {
		t.Fatalf("HTTP %d, %d requests", resp.StatusCode, len(list))
	}
	r := list[0]
	if r.Filename != "sales 2024.dump" || r.Aim != "production" || r.Target != "16.0" || r.State != store.StateDraft || len(r.Key) != 24 {
		t.Fatalf("created %+v", r)
	}
	if want := fmt.Sprintf("/database/eu1/%d/%s/status", r.ID, r.Key); resp.Header.Get("Location") != want {
		t.Fatalf("leads to %s, want %s", resp.Header.Get("Location"), want)
	}
	_, page := get(t, client, p.statusURL(r.Request))
	for _, want := range []string{"Upload the dump", "curl -sS -T &#39;sales 2024.dump&#39; &#39;" + p.srv.URL + "/database/v1/upload?request=",
		`sftp&gt; put &#34;sales 2024.dump&#34;`, "sftp -P 2200 user_" + fmt.Sprint(r.ID) + "@sftp.example.test"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the draft's page lacks %q", want)
		}
	}
	resp, _ = p.post(t, client, "/", url.Values{"x": {strings.Repeat("x", 70<<10)}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("an oversized form: HTTP %d", resp.StatusCode)
	}
}

// TestStatusPage is the status page moved from the API, now live: its
// facts, its files once they exist, the SFTP host keys and command once
// access is granted; status.json gives the new log lines only.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	p := newPages(t)
	ctx := context.Background()
	r := p.draft(t, []byte("dump"))
	resp, b := get(t, nil, p.statusURL(r), "Accept", browserAccept)
	page := string(b)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	for _, want := range []string{`<meta name="viewport"`, `data-active`, `<script src="/assets/status.js" defer>`, "draft",
		"db_name.dump", "Odoo 17.0", "4 bytes", "Upload received over HTTP", "/original/archive", "ssh-ed25519 SHA256:abc",
		"Start the upgrade", `href="/"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if !strings.Contains(page, `<span id="notes" hidden>`) {
		t.Error("a draft's page shows a link to the notes")
	}
	for _, unwanted := range []string{"upgraded/archive", `http-equiv="refresh"`} {
		if strings.Contains(page, unwanted) {
			t.Errorf("a draft's page shows %q", unwanted)
		}
	}

	// Processed over SFTP: the command and the host keys.
	if _, err := p.store.GrantSFTP(ctx, r.ID, []store.SFTPKey{{Fingerprint: "f", PublicKey: "k"}}, time.Hour, store.StateDraft); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.Process(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	_, b = get(t, nil, p.statusURL(r))
	for _, want := range []string{"ssh-ed25519 SHA256:abc", fmt.Sprintf("sftp -P 2200 user_%d@sftp.example.test", r.ID), "Waiting for a worker"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the queued page lacks %q", want)
		}
	}

	// status.json: only the lines after the one given; files once there.
	var v struct {
		State  string                        `json:"state"`
		Active bool                          `json:"active"`
		After  int64                         `json:"after"`
		Log    []struct{ Message string }    `json:"log"`
		Files  []struct{ Label, URL string } `json:"files"`
		Draft  bool                          `json:"draft"`
	}
	jsonURL := p.statusURL(r) + ".json"
	getJSON(t, jsonURL, &v)
	if v.State != "pending" || !v.Active || v.Draft || len(v.Log) != 3 || v.Log[2].Message != "Queued for processing." {
		t.Fatalf("status.json: %+v", v)
	}
	after := v.After
	if _, err := p.store.ForceState(ctx, r.ID, store.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	p.files.WriteFile(ctx, r.ID, files.UpgradedArchive, []byte("upgraded"))
	p.files.WriteFile(ctx, r.ID, files.Notes, []byte("<p>notes</p>"))
	getJSON(t, fmt.Sprintf("%s?after=%d", jsonURL, after), &v)
	if v.State != "done" || v.Active || len(v.Log) != 1 || !strings.Contains(v.Log[0].Message, "moved the request to done") {
		t.Fatalf("status.json after: %+v", v)
	}
	var labels []string
	for _, f := range v.Files {
		labels = append(labels, f.Label)
	}
	if got := strings.Join(labels, ", "); got != "Upgraded dump, Upgrade report, Your dump, as uploaded" {
		t.Fatalf("files: %s", got)
	}
	_, b = get(t, nil, p.statusURL(r))
	if strings.Contains(string(b), "data-active") || !strings.Contains(string(b), `id="notes-link">Upgrade report`) {
		t.Error("a done page still polls, or lacks its link to the notes")
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, b := get(t, nil, u, "Accept", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d %s", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// TestSignIn: a wrong token gets one answer, whatever it is; after a few
// from one address even the right one waits; the token never shows, in a
// page, a URL or a log line; the cookie holds a session id.
func TestSignIn(t *testing.T) {
	t.Parallel()
	p := newPages(t)
	client := noRedirects(t)
	var answers []string
	for i := range 3 {
		resp, body := p.post(t, client, "/admin/sign-in", url.Values{"token": {fmt.Sprint("guess-", i)}})
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "guess-") {
			t.Fatalf("wrong token %d: HTTP %d", i, resp.StatusCode)
		}
		answers = append(answers, signInMessage(body))
	}
	resp, body := p.post(t, client, "/admin/sign-in", url.Values{"token": {adminToken}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || len(resp.Cookies()) != 0 {
		t.Fatalf("the right token right after three wrong ones: HTTP %d", resp.StatusCode)
	}
	answers = append(answers, signInMessage(body))
	if answers[0] == "" || answers[0] != answers[1] || answers[0] != answers[3] {
		t.Fatalf("the answers differ: %q", answers)
	}
	p.advance(time.Second)
	resp, _ = p.post(t, client, "/admin/sign-in", url.Values{"token": {adminToken}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/" {
		t.Fatalf("the right token after the pause: HTTP %d", resp.StatusCode)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/admin/" || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(c.Value) {
		t.Fatalf("cookie %+v", c)
	}
	resp, body2 := get(t, client, p.srv.URL+"/admin/")
	if resp.StatusCode != 200 || strings.Contains(string(body2), adminToken) {
		t.Fatalf("signed in: HTTP %d", resp.StatusCode)
	}
	noSecretsIn(t, p.logs.String(), adminToken, c.Value)

	// Behind HTTPS the cookie is Secure.
	https := newPages(t, func(c *web.Config) { c.PublicURL = "https://upgrade.example.com" })
	resp, _ = https.post(t, noRedirects(t), "/admin/sign-in", url.Values{"token": {adminToken}})
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Fatalf("over HTTPS: %v", cs)
	}
	// A sign-in form from another site is refused before the token is
	// looked at.
	req, _ := http.NewRequest("POST", p.srv.URL+"/admin/sign-in", strings.NewReader("token="+adminToken))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := noRedirects(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("a sign-in from another site: HTTP %d", resp.StatusCode)
	}
}

var signInError = regexp.MustCompile(`<div class="alert" role="alert" id="signin-error"><p>([^<]*)</p>`)

func signInMessage(body string) string {
	m := signInError.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestSessionExpiry: a session unused for its idle time, or older than its
// life, leads back to the sign-in page, which says why; its forms are
// refused.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	p := newPages(t, func(c *web.Config) { c.SessionIdle, c.SessionMax = 10*time.Minute, time.Hour })
	r := p.draft(t, nil)
	client := noRedirects(t)
	csrf := p.signIn(t, client)
	for range 5 { // in use: every 9 minutes
		p.advance(9 * time.Minute)
		if resp, _ := get(t, client, p.srv.URL+"/admin/"); resp.StatusCode != 200 {
			t.Fatalf("a session in use: HTTP %d", resp.StatusCode)
		}
	}
	p.advance(11 * time.Minute)
	resp, _ := get(t, client, p.srv.URL+"/admin/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/sign-in?expired=1" {
		t.Fatalf("idle 11 minutes: HTTP %d to %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, b := get(t, client, p.srv.URL+"/admin/sign-in?expired=1")
	if !strings.Contains(string(b), "Your session has expired: sign in again.") {
		t.Error("the sign-in page does not say the session expired")
	}
	resp, _ = p.post(t, client, fmt.Sprintf("/admin/requests/%d/state", r.ID), url.Values{"csrf": {csrf}, "state": {"done"}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a form of an expired session: HTTP %d", resp.StatusCode)
	}
	if got, _ := p.store.Request(context.Background(), r.ID); got.State != store.StateDraft {
		t.Fatalf("a form of an expired session changed the state to %s", got.State)
	}

	// However busy, a session ends after its life.
	p.signIn(t, client)
	for i := range 8 {
		p.advance(9 * time.Minute)
		resp, _ := get(t, client, p.srv.URL+"/admin/")
		if i < 6 && resp.StatusCode != 200 || i == 6 && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("after %d minutes: HTTP %d", 9*(i+1), resp.StatusCode)
		}
	}
}

// recordingConsole records the order of the calls a delete makes.
type recordingConsole struct {
	*store.Store
	mu    sync.Mutex
	calls []string
}

func (c *recordingConsole) record(s string) {
	c.mu.Lock()
	c.calls = append(c.calls, s)
	c.mu.Unlock()
}

func (c *recordingConsole) DeleteRequest(ctx context.Context, id int64) error {
	c.record("store.DeleteRequest")
	return c.Store.DeleteRequest(ctx, id)
}

func (c *recordingConsole) ForgetDeleted(ctx context.Context, ids []int64) error {
	c.record("store.ForgetDeleted")
	return c.Store.ForgetDeleted(ctx, ids)
}

type recordingFiles struct {
	*files.Store
	console *recordingConsole
}

func (f recordingFiles) RemoveRequest(ctx context.Context, id int64) error {
	f.console.record("files.RemoveRequest")
	return f.Store.RemoveRequest(ctx, id)
}

// TestConsoleActions: each action needs its box ticked; a scenario is
// checked as the admin API checks it; a delete goes in the admin API's
// order (the record, its files, then the deletion record) and leaves
// nothing; fault rules are added, refused in words, removed.
func TestConsoleActions(t *testing.T) {
	t.Parallel()
	rec := &recordingConsole{}
	p := newPages(t, func(c *web.Config) {
		rec.Store = c.Console.(*store.Store)
		c.Console = rec
		c.Files = recordingFiles{Store: c.Files.(*files.Store), console: rec}
	})
	ctx := context.Background()
	r := p.draft(t, []byte("a dump"))
	client := noRedirects(t)
	csrf := p.signIn(t, client)
	path := fmt.Sprintf("/admin/requests/%d", r.ID)

	resp, body := p.post(t, client, path+"/state", url.Values{"csrf": {csrf}, "state": {"done"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Nothing was done: tick the box to confirm.") {
		t.Fatalf("without the box: HTTP %d", resp.StatusCode)
	}
	resp, _ = p.post(t, client, path+"/state", url.Values{"csrf": {csrf}, "state": {"bogus"}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("an unknown state: HTTP %d", resp.StatusCode)
	}
	resp, body = p.post(t, client, path+"/scenario", url.Values{"csrf": {csrf}, "scenario": {"duration=x"}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "This scenario cannot be used: duration=x") ||
		!strings.Contains(body, `value="duration=x"`) {
		t.Fatalf("a bad scenario: HTTP %d", resp.StatusCode)
	}
	resp, _ = p.post(t, client, path+"/scenario", url.Values{"csrf": {csrf}, "scenario": {"testing,polls=2"}, "confirm": {"yes"}})
	got, _ := p.store.Request(ctx, r.ID)
	if resp.StatusCode != http.StatusSeeOther || got.Scenario == nil || *got.Scenario != "scenario:testing,polls=2" || got.HoldPolls != 2 {
		t.Fatalf("set a scenario: HTTP %d %+v", resp.StatusCode, got)
	}
	p.post(t, client, path+"/scenario", url.Values{"csrf": {csrf}, "scenario": {""}, "confirm": {"yes"}})
	if got, _ = p.store.Request(ctx, r.ID); got.Scenario != nil {
		t.Fatal("the scenario was not removed")
	}

	if resp, _ = p.post(t, client, path+"/delete", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("delete without the box: HTTP %d", resp.StatusCode)
	}
	resp, _ = p.post(t, client, path+"/delete", url.Values{"csrf": {csrf}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: HTTP %d", resp.StatusCode)
	}
	want := []string{"store.DeleteRequest", "files.RemoveRequest", "store.ForgetDeleted"}
	if fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", rec.calls, want)
	}
	if _, err := p.store.Request(ctx, r.ID); err == nil {
		t.Fatal("the request is still there")
	}
	if left, _ := p.files.List(ctx, r.ID); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
	if ids, _ := p.store.DeletedRequests(ctx); len(ids) != 0 {
		t.Fatalf("deletion records left: %v", ids)
	}
	_, b := get(t, client, p.srv.URL+resp.Header.Get("Location"))
	if !strings.Contains(string(b), fmt.Sprintf("Request %d was deleted, with its files.", r.ID)) {
		t.Error("the list does not say the request was deleted")
	}
	if resp, _ := get(t, client, p.srv.URL+path); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a deleted request's page: HTTP %d", resp.StatusCode)
	}

	resp, body = p.post(t, client, "/admin/faults", url.Values{"csrf": {csrf}, "kind": {"http_error"}, "status": {"200"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "The rule was refused: http_error needs a status between 400 and 599.") {
		t.Fatalf("a bad rule: HTTP %d", resp.StatusCode)
	}
	resp, body = p.post(t, client, "/admin/faults", url.Values{"csrf": {csrf}, "kind": {"latency"}, "latency_ms": {"soon"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Not a number: latency_ms.") {
		t.Fatalf("a rule with a bad number: HTTP %d", resp.StatusCode)
	}
	for _, form := range []url.Values{
		{"kind": {"drop_upload"}, "method": {"upload"}, "after_bytes": {"1000"}, "times": {"1"}},
		{"kind": {"latency"}, "latency_ms": {"250"}, "probability": {"0.5"}},
	} {
		form.Set("csrf", csrf)
		if resp, _ = p.post(t, client, "/admin/faults", form); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("add %v: HTTP %d", form, resp.StatusCode)
		}
	}
	_, b = get(t, client, p.srv.URL+"/admin/faults")
	if !strings.Contains(string(b), "after 1000 bytes") || !strings.Contains(string(b), "250 ms") {
		t.Errorf("the rules are not listed")
	}
	if resp, _ = p.post(t, client, "/admin/faults/1/remove", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("remove a rule: HTTP %d", resp.StatusCode)
	}
	if resp, _ = p.post(t, client, "/admin/faults/clear", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("clear without the box: HTTP %d", resp.StatusCode)
	}
	if resp, _ = p.post(t, client, "/admin/faults/clear", url.Values{"csrf": {csrf}, "confirm": {"yes"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("clear: HTTP %d", resp.StatusCode)
	}
	_, b = get(t, client, p.srv.URL+"/admin/faults")
	if !strings.Contains(string(b), "No rule: nothing is injected.") {
		t.Error("the rules were not cleared")
	}
}
