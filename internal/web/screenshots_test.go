package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestScreenshots re-makes the README's pictures, with the browser of the
// other tests, only when asked:
//
//	go test -run TestScreenshots ./internal/web -args -screenshots=../../docs/screenshots
func TestScreenshots(t *testing.T) {
	if *screenshots == "" {
		t.Skip("pictures only with -screenshots=DIR")
	}
	if err := os.MkdirAll(*screenshots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The pictures show the server as a person would run it.
	const public = "http://localhost:8080"
	srv := newServer(t, serverOptions{contracts: "M123456-abcdef", maxUpload: 100 << 30, publicURL: public})
	local := func(u string) string { return strings.Replace(u, public, srv.URL, 1) }
	done, _, _, _ := sampleRequests(t, srv)
	_, dump := fixture(t)
	running := srv.newRequest(t, "scenario:duration=20", "acme-staging.dump", dump)
	srv.call(t, "process", auth(running))
	srv.waitStored(t, reqID(running), "processing")

	ctx := newTab(t)
	shot := func(name string) {
		t.Helper()
		png := value(t, ctx, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(*screenshots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do(t, ctx, chromedp.EmulateViewport(1000, 800))
	do(t, ctx, chromedp.Navigate(srv.URL+"/"),
		chromedp.SendKeys(chromedp.ID("contract"), "M123456-abcdef"),
		chromedp.SendKeys(chromedp.ID("email"), "jane@acme.example"))
	shot("form.png")

	do(t, ctx, chromedp.Navigate(local(running.Request["status_url"].(string))), chromedp.WaitVisible(chromedp.ID("progress-text")))
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("progress-bar").value >= 15`))
	if err != nil {
		t.Fatal(err)
	}
	shot("status-live.png")
	do(t, ctx, chromedp.Navigate(local(done.Request["status_url"].(string))), chromedp.WaitVisible(chromedp.ID("files")))
	shot("status-done.png")

	signIn(t, ctx, srv)
	shot("console.png")
	do(t, ctx, chromedp.Navigate(srv.URL+fmt.Sprintf("/admin/requests/%d", reqID(done))), chromedp.WaitVisible(chromedp.ID("force-state")))
	shot("console-request.png")

	do(t, ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
		chromedp.Navigate(local(running.Request["status_url"].(string))), chromedp.WaitVisible(chromedp.ID("progress-text")))
	png := value(t, ctx, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(*screenshots, "phone.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
