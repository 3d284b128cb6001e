package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// consoleCookie is the browser's console session cookie.
func consoleCookie(t *testing.T, ctx context.Context) *http.Cookie {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Cookies {
		if c.Name == "upgrade_console" {
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/admin/" {
				t.Errorf("session cookie: HttpOnly %v, SameSite %s, Path %s", c.HTTPOnly, c.SameSite, c.Path)
			}
			return &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	t.Fatal("no session cookie")
	return nil
}

// post sends a form as a plain HTTP client would, with the session cookie
// and headers (name, value, …), and returns the status.
func post(t *testing.T, u string, cookie *http.Cookie, form url.Values, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	req.AddCookie(cookie)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestConsoleInTheBrowser: an operator signs in with the token, finds a
// request, forces its state; forms forged without the session's CSRF
// token, or sent from another site, are refused; sign-out ends the
// session.
func TestConsoleInTheBrowser(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{})
	_, dump := fixture(t)
	held := srv.newRequest(t, "scenario:polls=5", "warehouse-2024.dump", dump) // stays queued
	srv.call(t, "process", auth(held))
	other := srv.newRequest(t, "M1", "other.dump", nil)
	heldID := int64(held.Request["id"].(float64))
	failed := srv.newRequest(t, "scenario:fail=The dump has no ir_module_module table.", "broken.dump", dump)
	srv.call(t, "process", auth(failed))
	running := srv.newRequest(t, "scenario:polls=1", "running.dump", dump) // processing after one status call
	srv.call(t, "process", auth(running))
	srv.call(t, "status", auth(running))
	srv.waitStored(t, reqID(failed), store.StateFailed)
	srv.waitStored(t, reqID(running), store.StateProcessing)

	ctx := newTab(t)
	watchConsole(t, ctx)
	do(t, ctx, chromedp.Navigate(srv.URL+"/admin/"), chromedp.WaitVisible(id("token")))
	if loc := value(t, ctx, chromedp.Location()); !strings.HasSuffix(loc, "/admin/sign-in") {
		t.Fatalf("signed out, /admin/ leads to %s", loc)
	}
	do(t, ctx, chromedp.SendKeys(id("token"), "not-the-token"), chromedp.Submit(id("token")), chromedp.WaitVisible(id("signin-error")))
	if msg := value(t, ctx, chromedp.Text(id("signin-error"))); !strings.Contains(msg, "Sign-in refused") {
		t.Errorf("wrong token: %q", msg)
	}
	if html := value(t, ctx, chromedp.OuterHTML(chromedp.CSS("html"))); strings.Contains(html, "not-the-token") {
		t.Error("the page shows the token typed")
	}
	do(t, ctx, chromedp.SendKeys(id("token"), adminToken), chromedp.Submit(id("token")), chromedp.WaitVisible(id("queue-title")))
	if loc := value(t, ctx, chromedp.Location()); strings.Contains(loc, adminToken) {
		t.Fatal("the token is in a URL")
	}
	section := func(title string) string {
		return value(t, ctx, chromedp.Text(chromedp.CSS(fmt.Sprintf(`section[aria-labelledby=%q]`, title))))
	}
	if queue := section("queue-title"); !strings.Contains(queue, fmt.Sprintf("#%d", heldID)) || !strings.Contains(queue, "warehouse-2024.dump") {
		t.Errorf("the queue shows:\n%s", queue)
	}
	r, _ := srv.store.Overview(context.Background(), reqID(running))
	if run := section("running-title"); !strings.Contains(run, fmt.Sprintf("#%d", reqID(running))) || r.LeaseOwner == nil ||
		!strings.Contains(run, *r.LeaseOwner) {
		t.Errorf("running shows:\n%s", run)
	}
	if f := section("failures-title"); !strings.Contains(f, "broken.dump") || !strings.Contains(f, "The dump has no ir_module_module table.") {
		t.Errorf("failures show:\n%s", f)
	}
	if c := section("counts-title"); !strings.Contains(c, "1 processing") || !strings.Contains(c, "1 failed") || !strings.Contains(c, "(4 in all)") {
		t.Errorf("counts show:\n%s", c)
	}
	srv.call(t, "status", auth(running)) // lets it finish

	// Find it, open it, force its state.
	do(t, ctx,
		chromedp.SendKeys(id("q"), "WAREHOUSE"),
		chromedp.Submit(id("q")),
		chromedp.WaitVisible(id("requests")),
	)
	rows := value(t, ctx, chromedp.Text(id("requests")))
	if !strings.Contains(rows, "warehouse-2024.dump") || strings.Contains(rows, "other.dump") {
		t.Errorf("search results:\n%s", rows)
	}
	do(t, ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#requests a[href$="/admin/requests/%d"]`, heldID))),
		chromedp.WaitVisible(id("force-state")))
	if log := value(t, ctx, chromedp.Text(chromedp.CSS(".log"))); !strings.Contains(log, "Queued for processing.") {
		t.Errorf("the request's log shows:\n%s", log)
	}
	do(t, ctx,
		chromedp.SetValue(id("force-state"), "cancelled"),
		chromedp.SendKeys(id("force-message"), "Stopped by the operator."),
		chromedp.Click(id("force-confirm")),
		chromedp.Click(id("force-submit")),
		chromedp.WaitVisible(id("notice")),
	)
	if st := value(t, ctx, chromedp.Text(id("state"))); st != "cancelled" {
		t.Errorf("the page shows %q after forcing cancelled", st)
	}
	got, err := srv.store.Request(context.Background(), heldID)
	if err != nil || got.State != store.StateCancelled || got.CustomerMessage == nil || *got.CustomerMessage != "Stopped by the operator." {
		t.Fatalf("after forcing: %+v %v", got, err)
	}

	// Forged forms, with the session cookie: no CSRF token, a wrong one,
	// the right one sent from another site. None changes anything; the
	// same form from a client that says where it comes from as this
	// server's pages do goes through.
	cookie := consoleCookie(t, ctx)
	page := value(t, ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF field on the request's page")
	}
	csrf := m[1]
	action := fmt.Sprintf("%s/admin/requests/%d/state", srv.URL, heldID)
	form := func(token string) url.Values {
		v := url.Values{"state": {"done"}, "confirm": {"yes"}}
		if token != "" {
			v.Set("csrf", token)
		}
		return v
	}
	for _, c := range []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", form(""), nil},
		{"a wrong token", form(strings.Repeat("0", len(csrf))), nil},
		{"a token of another length", form("abc"), nil},
		{"from another site (Origin)", form(csrf), []string{"Origin", "http://evil.example"}},
		{"from another site (Sec-Fetch-Site)", form(csrf), []string{"Sec-Fetch-Site", "cross-site"}},
		{"from a sibling site", form(csrf), []string{"Origin", "http://127.0.0.2:1", "Sec-Fetch-Site", "same-site"}},
	} {
		if code := post(t, action, cookie, c.form, c.hdr...); code != http.StatusForbidden {
			t.Errorf("%s: HTTP %d, want 403", c.name, code)
		}
	}
	if r, _ := srv.store.Request(context.Background(), heldID); r.State != store.StateCancelled {
		t.Fatalf("a forged form changed the state to %s", r.State)
	}
	if code := post(t, action, cookie, form(csrf), "Origin", srv.URL, "Sec-Fetch-Site", "same-origin"); code != http.StatusSeeOther {
		t.Fatalf("the real form from a plain client: HTTP %d", code)
	}
	if r, _ := srv.store.Request(context.Background(), heldID); r.State != store.StateDone {
		t.Fatalf("the real form did not apply: %s", r.State)
	}

	// Sign out: the session is over for the browser and for the cookie.
	do(t, ctx, chromedp.Click(chromedp.CSS(`header button.link`)), chromedp.WaitVisible(id("token")))
	if txt := value(t, ctx, chromedp.Text(chromedp.CSS("main"))); !strings.Contains(txt, "You are signed out.") {
		t.Errorf("after sign-out:\n%s", txt)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/admin/", nil)
	req.AddCookie(cookie)
	resp, err := noRedirects(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/sign-in" {
		t.Fatalf("the old cookie after sign-out: HTTP %d to %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code := post(t, action, cookie, form(csrf), "Origin", srv.URL); code != http.StatusSeeOther {
		t.Fatalf("a form with the old cookie: HTTP %d", code)
	}
	if r, _ := srv.store.Request(context.Background(), heldID); r.State != store.StateDone {
		t.Fatalf("a form after sign-out changed the state to %s", r.State)
	}
	noSecretsIn(t, srv.logs.String(), adminToken, cookie.Value, csrf, held.Request["key"].(string), other.Request["key"].(string))
}
