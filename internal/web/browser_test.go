package web_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// requestCount is how many requests the server holds.
func (s *server) requestCount(t *testing.T) int {
	t.Helper()
	counts, err := s.store.CountByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// TestFormFieldErrors: the form's refusals show next to their fields, in
// words, with what was typed kept; a file over the upload limit is refused
// from its size, before anything is created or sent.
func TestFormFieldErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{contracts: "M123456-abcdef", maxUpload: 64 << 10})
	ctx := newTab(t)
	watchConsole(t, ctx)
	dumpPath, _ := fixture(t)
	big := filepath.Join(t.TempDir(), "big.dump")
	if err := os.WriteFile(big, make([]byte, 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}

	do(t, ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.SendKeys(id("contract"), "M999-nope"),
		chromedp.SendKeys(id("email"), "jane@example.com"),
		chromedp.SetUploadFiles(id("dump"), []string{dumpPath}),
		chromedp.Click(id("submit")),
		chromedp.WaitVisible(id("contract-error")),
	)
	contractErr := value(t, ctx, chromedp.Text(id("contract-error")))
	email := value(t, ctx, chromedp.Value(id("email")))
	emailErrHidden := eval[bool](t, ctx, `document.getElementById("email-error").hidden`)
	focused := eval[string](t, ctx, `document.activeElement.id`)
	invalid := eval[string](t, ctx, `document.getElementById("contract").getAttribute("aria-invalid")`)
	if !strings.Contains(contractErr, "This server does not know this contract") {
		t.Errorf("contract error %q", contractErr)
	}
	if email != "jane@example.com" || !emailErrHidden {
		t.Errorf("email %q lost or refused (error hidden: %v)", email, emailErrHidden)
	}
	if focused != "contract" || invalid != "true" {
		t.Errorf("focus on %q, aria-invalid %q: the refused field should have both", focused, invalid)
	}
	if n := srv.requestCount(t); n != 0 {
		t.Fatalf("%d requests created by a refused form", n)
	}

	// An empty file: said as soon as it is chosen.
	empty := filepath.Join(t.TempDir(), "empty.dump")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.SetUploadFiles(id("dump"), []string{empty}), chromedp.WaitVisible(id("dump-error")))
	if msg := value(t, ctx, chromedp.Text(id("dump-error"))); msg != "This file is empty: choose the dump itself." {
		t.Errorf("an empty file: %q", msg)
	}

	// Over the limit: said as soon as the file is chosen, and again on
	// submit; nothing is created.
	do(t, ctx,
		chromedp.SetValue(id("contract"), "M123456-abcdef"),
		chromedp.SetUploadFiles(id("dump"), []string{big}),
		chromedp.WaitVisible(id("dump-error")),
		chromedp.Click(id("submit")),
		chromedp.WaitVisible(id("dump-error")),
	)
	dumpErr := value(t, ctx, chromedp.Text(id("dump-error")))
	if !strings.Contains(dumpErr, "This file is 100 KiB; this server takes files up to 64 KiB") {
		t.Errorf("over the limit: %q", dumpErr)
	}
	if !eval[bool](t, ctx, `document.getElementById("upload").hidden`) {
		t.Error("the upload started for a file over the limit")
	}
	if n := srv.requestCount(t); n != 0 {
		t.Fatalf("%d requests created for a file over the limit", n)
	}

	// A file dropped on the form is taken as if chosen.
	eval[chromedp.Void](t, ctx, `(() => {
		const dt = new DataTransfer();
		dt.items.add(new File([new Uint8Array(80 << 10)], "dropped.dump"));
		document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
	})()`)
	if got := eval[string](t, ctx, `document.getElementById("dump").files[0].name`); got != "dropped.dump" {
		t.Errorf("the file input holds %q after a drop", got)
	}
	if msg := value(t, ctx, chromedp.Text(id("dump-error"))); !strings.Contains(msg, "This file is 80 KiB") {
		t.Errorf("a dropped file over the limit: %q", msg)
	}
}

// statusOf reads the request id and key from a status page's path.
func statusOf(t *testing.T, loc string) (id, key string) {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/") // database eu1 <id> <key> status
	if len(parts) != 5 || parts[0] != "database" || parts[4] != "status" {
		t.Fatalf("not a status page: %s", loc)
	}
	return parts[2], parts[3]
}

// waitState waits until the page shows the request in state (v1's name),
// without the page being reloaded.
func waitState(t *testing.T, ctx context.Context, state string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		fmt.Sprintf(`document.getElementById("state").textContent === %q`, state),
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		shown, _ := chromedp.Run(ctx, chromedp.Text(id("state")))
		t.Fatalf("waiting for %s (the page shows %q): %v", state, shown, err)
	}
}

// TestUpgradeInTheBrowser is the whole flow as a person does it: the form,
// the file chosen with the file input, an upload whose connection drops
// and is tried again, the progress reaching 100 %, the status page turning
// done by itself, and the upgraded dump downloaded from it, the same bytes
// as the API serves.
func TestUpgradeInTheBrowser(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{contracts: "M123456-abcdef", maxUpload: 1 << 20})
	ctx := newTab(t)
	watchConsole(t, ctx)
	dumpPath, dump := fixture(t)

	// The first upload's connection drops (the browser fails the request
	// as a reset connection would).
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/database/v1/upload?*"}}}); err != nil {
		t.Fatal(err)
	}
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	dropped := make(chan error, 1)
	go func() {
		for ev, err := range paused {
			if err == nil {
				_, err = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionReset})
			}
			dropped <- err
			return
		}
	}()

	// A scenario contract (accepted whatever UPGRADE_CONTRACTS says) that
	// holds the request pending, then processing, until the API's status
	// is called: the page is seen in each state.
	do(t, ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.SendKeys(id("contract"), "scenario:polls=1"),
		chromedp.SendKeys(id("email"), "jane@example.com"),
		chromedp.SetValue(id("target"), "17.0"),
		chromedp.Click(id("aim-production")),
		chromedp.SetUploadFiles(id("dump"), []string{dumpPath}),
	)
	// Keep every percentage the page shows, across the navigation to the
	// status page.
	eval[chromedp.Void](t, ctx, `(() => {
		const el = document.getElementById("upload-percent");
		sessionStorage.setItem("shown", "");
		new MutationObserver(() => sessionStorage.setItem("shown", sessionStorage.getItem("shown") + "|" + el.textContent))
			.observe(el, {childList: true, characterData: true, subtree: true});
	})()`)
	do(t, ctx, chromedp.Click(id("submit")))
	if err := <-dropped; err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.WaitVisible(id("upload-retry")))
	problem := value(t, ctx, chromedp.Text(id("upload-problem")))
	if !strings.Contains(problem, "The connection dropped during the upload") || !strings.Contains(problem, "stays a draft") {
		t.Errorf("after a dropped connection: %q", problem)
	}
	list, err := srv.store.SearchRequests(context.Background(), store.Search{})
	if err != nil || len(list) != 1 || list[0].State != store.StateDraft || list[0].UploadCompletedAt != nil ||
		list[0].Aim != "production" || list[0].Target != "17.0" || list[0].Filename != "odoo12.custom.dump" {
		t.Fatalf("after the drop: %+v %v", list, err)
	}
	if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}

	do(t, ctx, chromedp.Click(id("upload-retry")), chromedp.WaitVisible(id("state")))
	if shown := eval[string](t, ctx, `sessionStorage.getItem("shown")`); !strings.HasSuffix(shown, "|100 %") {
		t.Errorf("the progress shown: %q, never 100 %%", shown)
	}
	reqID, key := statusOf(t, value(t, ctx, chromedp.Location()))
	waitState(t, ctx, "pending")
	eval[chromedp.Void](t, ctx, `window.stayed = "the same page"`)

	a := answer{Request: map[string]any{"id": float64(list[0].ID), "key": key}}
	if fmt.Sprint(list[0].ID) != reqID {
		t.Fatalf("landed on request %s, created %d", reqID, list[0].ID)
	}
	srv.call(t, "status", auth(a)) // releases it to a worker
	waitState(t, ctx, "processing")
	if txt := value(t, ctx, chromedp.Text(id("progress-text"))); !strings.Contains(txt, "elapsed") {
		t.Errorf("progress while processing: %q", txt)
	}
	st := srv.call(t, "status", auth(a)) // lets it finish
	waitState(t, ctx, "done")
	if eval[string](t, ctx, `window.stayed`) != "the same page" {
		t.Fatal("the page was reloaded")
	}
	for _, want := range []string{"Queued for processing.", "Upgrade done."} {
		if log := value(t, ctx, chromedp.Text(id("log"))); !strings.Contains(log, want) {
			t.Errorf("the log shown lacks %q:\n%s", want, log)
		}
	}

	// Download the upgraded dump with the page's button.
	dir := t.TempDir()
	if _, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true),
		BrowserContextID: chromedp.FromContext(ctx).BrowserContextID}); err != nil {
		t.Fatal(err)
	}
	progress := chromedp.BrowserEvents(ctx, cdpbrowser.DownloadProgress)
	do(t, ctx, chromedp.Click(chromedp.CSS(`#files a[href$="/upgraded/archive"]`)))
	var file string
	for ev, err := range progress {
		if err != nil {
			t.Fatal(err)
		}
		if ev.State == cdpbrowser.DownloadProgressStateCanceled {
			t.Fatal("the download was cancelled")
		}
		if ev.State == cdpbrowser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, fromAPI := get(t, nil, st.Request["upgraded_dump_url"].(string))
	if !bytes.Equal(got, fromAPI) || !bytes.Equal(got, dump) {
		t.Fatalf("downloaded %d bytes, the API serves %d, the upload was %d", len(got), len(fromAPI), len(dump))
	}

	// The report links back to the status page.
	statusURL := value(t, ctx, chromedp.Location())
	do(t, ctx, chromedp.Click(id("notes-link")), chromedp.WaitVisible(chromedp.CSS(`a[href="../status"]`)),
		chromedp.Click(chromedp.CSS(`a[href="../status"]`)), chromedp.WaitVisible(id("state")))
	if loc := value(t, ctx, chromedp.Location()); loc != statusURL {
		t.Errorf("the report leads back to %s, not %s", loc, statusURL)
	}
	noSecretsIn(t, srv.logs.String(), key)
}

func ptr[T any](v T) *T { return &v }
