package web_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// screenshots, when set, is where TestScreenshots writes the README's
// pictures (go test -run TestScreenshots ./internal/web -args
// -screenshots=../../docs/screenshots).
var screenshots = flag.String("screenshots", "", "write the README's screenshots to this folder")

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	closeBrowser()
	os.Exit(code)
}

// The browser: one headless Chromium for the package, started on first
// use, each test in a tab of its own.
var chrome struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab; new tabs derive from it
	cancel func()
	err    error
}

// chromiumPath is Debian's chromium, or UPGRADE_TEST_CHROMIUM.
func chromiumPath() (string, error) {
	if p := os.Getenv("UPGRADE_TEST_CHROMIUM"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	return "", errors.New("Chromium is not installed: the browser tests need it (Debian/Ubuntu: apt-get install chromium; " +
		"elsewhere set UPGRADE_TEST_CHROMIUM to a Chromium or Chrome binary)")
}

// chromiumOptions start Chromium headless with a fresh user-data-dir
// (chromedp's, removed when it stops). The machine's network may be
// closed: without the background networking flags Chromium's own
// connections are refused and slow it.
func chromiumOptions(path string) []chromedp.ExecAllocatorOption {
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1200, 900),
	}
}

func startBrowser() {
	path, err := chromiumPath()
	if err != nil {
		chrome.err = err
		return
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromiumOptions(path)...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	chrome.ctx = ctx
	chrome.cancel = func() { cancelCtx(); cancelAlloc() }
	// (No timeout here: the context of the first call is the browser's life.)
	if err := chromedp.Do(ctx); err != nil {
		chrome.err = fmt.Errorf("start Chromium (%s): %w", path, err)
	}
}

func closeBrowser() {
	if chrome.cancel != nil {
		chrome.cancel()
	}
}

// newTab opens a tab of the package's browser for the test, closed when it
// ends. A missing Chromium fails the test, saying how to install it.
//
// Each tab has a browser context of its own (cookies, cache, sockets),
// disposed with it: a test's session is its own, and no connection of the
// browser outlives the test (a connection open with no request yet would
// hold the server's shutdown for 5 s).
func newTab(t *testing.T) context.Context {
	t.Helper()
	chrome.once.Do(startBrowser)
	if chrome.err != nil {
		t.Fatal(chrome.err)
	}
	tab, cancel := chromedp.NewContext(chrome.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil { // opens the tab
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(tab, 45*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// ownBrowser starts a browser of the test's own, for a test that kills it
// (kill stops every process of it at once, as a crash or a power cut
// would).
func ownBrowser(t *testing.T) (ctx context.Context, kill func()) {
	t.Helper()
	path, err := chromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromiumOptions(path)...)
	t.Cleanup(cancelAlloc)
	tab, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start a browser: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(tab, 45*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx, cancelAlloc
}

// do runs browser actions, failing the test on error.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// value runs one browser action that gives a value, failing the test on
// error.
func value[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// eval evaluates a JavaScript expression in the tab.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	return value(t, ctx, chromedp.Evaluate[T](expr))
}

// id selects an element by its id.
func id(s string) chromedp.ID { return chromedp.ID(s) }

// watchConsole fails the test, when it ends, for every script error and
// every message the browser logs as an error (a Content-Security-Policy
// violation among them) in the tab.
func watchConsole(t *testing.T, ctx context.Context) {
	t.Helper()
	var mu sync.Mutex
	var problems []string
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				p += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				p = "console.error"
			}
		case *cdplog.EventEntryAdded:
			// A failed download or request the test provoked is not the
			// page's fault; anything else logged as an error is.
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				p = string(ev.Entry.Source) + ": " + ev.Entry.Text
			}
		}
		if p != "" {
			mu.Lock()
			problems = append(problems, p)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("browser: %s", p)
		}
	})
}

// signIn signs the tab in to the console.
func signIn(t *testing.T, ctx context.Context, srv *server) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(srv.URL+"/admin/sign-in"), chromedp.SendKeys(chromedp.ID("token"), srv.Token),
		chromedp.Submit(chromedp.ID("token")), chromedp.WaitVisible(chromedp.ID("queue-title")))
}
