package web_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// slowUploads makes the tab's uploads go at rate bytes a second.
func slowUploads(t *testing.T, ctx context.Context, rate float64) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	_, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{DownloadThroughput: -1, UploadThroughput: rate}}})
	if err != nil {
		t.Fatal(err)
	}
}

// waitUploading waits until the page shows an upload under way (more than
// 0 %) and the server holds its lease.
func waitUploading(t *testing.T, ctx context.Context, srv *server, id int64) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const p = document.getElementById("upload-percent").textContent;
		return p !== "0 %" && p !== "100 %"; })()`, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("the upload never showed progress: %v", err)
	}
	// The page counts the bytes the browser sent, which may be before the
	// server has taken the upload's lease: wait for it too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := srv.store.Request(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Uploading {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never held the upload")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUploadInterrupted: on a draft's page, an upload cancelled, or cut
// short by a browser that went away mid-upload, leaves the request a draft
// with nothing kept; the page says so and offers to try again; a later
// upload from another browser goes through, and the page follows the
// request until it fails, showing why (the file is no dump).
func TestUploadInterrupted(t *testing.T) {
	t.Parallel()
	srv := newServer(t, serverOptions{maxUpload: 16 << 20})
	a := srv.newRequest(t, "M1", "big.dump", nil)
	id := reqID(a)
	dump := make([]byte, 3<<20)
	rand.Read(dump)
	path := filepath.Join(t.TempDir(), "big.dump")
	if err := os.WriteFile(path, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	status := a.Request["status_url"].(string)

	first, kill := ownBrowser(t)
	slowUploads(t, first, 512<<10)
	do(t, first, chromedp.Navigate(status), chromedp.SetUploadFiles(id_("dump"), []string{path}),
		chromedp.Click(id_("upload-submit")))
	waitUploading(t, first, srv, id)
	_, err := chromedp.Run(first, chromedp.Poll[bool](`document.getElementById("upload-detail").textContent.includes("left")`,
		chromedp.WithPollingTimeout(10*time.Second)))
	detail := value(t, first, chromedp.Text(id_("upload-detail")))
	if err != nil || !regexp.MustCompile(`^· \d+ KiB of 3 MiB · [\d.]+ (KiB|MiB)/s · about \d+ s left$`).MatchString(detail) {
		t.Errorf("progress shows %q (%v): bytes, rate and time left expected", detail, err)
	}
	do(t, first, chromedp.Click(id_("upload-cancel")), chromedp.WaitVisible(id_("upload-retry")))
	if msg := value(t, first, chromedp.Text(id_("upload-problem"))); !strings.Contains(msg, "The upload was cancelled") ||
		!strings.Contains(msg, "stays a draft") {
		t.Errorf("after cancel: %q", msg)
	}
	srv.waitReleased(t, id)

	// Again, and the browser goes away mid-upload (killed, as by a crash
	// or a power cut: closing a tab or leaving the page lets Chromium
	// finish an upload it has started).
	do(t, first, chromedp.Click(id_("upload-retry")))
	waitUploading(t, first, srv, id)
	kill()
	r := srv.waitReleased(t, id)
	if r.State != store.StateDraft || r.UploadCompletedAt != nil || r.UploadSize != nil {
		t.Fatalf("after the browser went away: %+v", r)
	}

	second := newTab(t)
	watchConsole(t, second)
	do(t, second, chromedp.Navigate(status), chromedp.SetUploadFiles(id_("dump"), []string{path}), chromedp.Click(id_("upload-submit")))
	// Random bytes are no dump: the pipeline's reason shows on the page.
	waitState(t, second, "invalid")
	if !eval[bool](t, second, `document.getElementById("how").hidden`) {
		t.Error("a failed request's page still says how to upload")
	}
	if msg := value(t, second, chromedp.Text(id_("message"))); !strings.Contains(msg, "The uploaded file cannot be used") {
		t.Errorf("the reason shown: %q", msg)
	}
	r, _ = srv.store.Request(context.Background(), id)
	if r.UploadSize == nil || *r.UploadSize != int64(len(dump)) {
		t.Fatalf("the upload recorded: %+v", r)
	}
}

// id_ selects by id (id is taken by a variable here).
func id_(s string) chromedp.ID { return chromedp.ID(s) }

// waitReleased waits until no upload of the request runs (the server saw
// the connection end and let the lease go).
func (s *server) waitReleased(t *testing.T, id int64) store.Request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := s.store.Request(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Uploading {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %d: the upload is still held", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
