package web_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPhoneWidth: on a phone's 375 px, no page is wider than the screen
// (long file names, keys in commands, host keys and tables wrap or scroll
// inside their box); and a wrong link gives a browser a page with a way
// back to the form.
func TestPhoneWidth(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{contracts: "M123456-abcdef", maxUpload: 1 << 20})
	done, failed, draft, _ := sampleRequests(t, srv)
	ctx := newTab(t)
	watchConsole(t, ctx)
	do(t, ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile, chromedp.EmulateTouch))
	fits := func(what string) {
		t.Helper()
		if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 375 {
			t.Errorf("%s is %d px wide on a 375 px screen", what, w)
		}
	}
	status := func(a answer) string { return a.Request["status_url"].(string) }

	do(t, ctx, chromedp.Navigate(srv.URL+"/"), chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("dump-error")))
	fits("the form, with its errors")
	for _, p := range []struct{ what, url string }{
		{"a done request's page", status(done)},
		{"a failed request's page", status(failed)},
		{"a draft's page (how to upload)", status(draft)},
	} {
		do(t, ctx, chromedp.Navigate(p.url), chromedp.WaitVisible(chromedp.ID("state")))
		fits(p.what)
	}

	wrong := strings.Replace(status(done), done.Request["key"].(string), "not-the-key", 1)
	do(t, ctx, chromedp.Navigate(wrong), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h := value(t, ctx, chromedp.Text(chromedp.CSS("main h1"))); h != "Nothing here" {
		t.Errorf("a wrong key shows %q", h)
	}
	if href := eval[string](t, ctx, `document.querySelector("main a.button").getAttribute("href")`); href != "/" {
		t.Errorf("the not-found page leads to %q", href)
	}
	fits("the not-found page")

	signIn(t, ctx, srv)
	fits("the console's overview")
	for _, p := range []struct{ what, path, ready string }{
		{"the list of requests", "/admin/requests", "requests"},
		{"a request in the console", fmt.Sprintf("/admin/requests/%d", reqID(done)), "force-state"},
		{"the fault rules", "/admin/faults", "kind"},
	} {
		do(t, ctx, chromedp.Navigate(srv.URL+p.path), chromedp.WaitVisible(chromedp.ID(p.ready)))
		fits(p.what)
	}
}
