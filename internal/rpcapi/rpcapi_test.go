package rpcapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

// TestLogText: the log is ASCII, one line an event, so that the client's
// character offsets are byte offsets.
func TestLogText(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	got := LogText([]store.Event{
		{At: at, Level: "info", Message: "Inspecting the dump…"},
		{At: at, Level: "warning", Message: "Société: layers gzip › sql\nsecond line\x00"},
		{At: at, Level: "info", Message: "emoji 😀"},
	})
	want := "2026-11-28 10:00:00 INFO Inspecting the dump...\n" +
		"2026-11-28 10:00:00 WARNING Soci\\u00e9t\\u00e9: layers gzip > sql second line\n" +
		"2026-11-28 10:00:00 INFO emoji \\U0001f600\n"
	if got != want {
		t.Fatalf("LogText:\n%q\nwant\n%q", got, want)
	}
	for i := 0; i < len(got); i++ {
		if got[i] >= 0x80 {
			t.Fatalf("byte %d is not ASCII", i)
		}
	}
}

func TestRangeStart(t *testing.T) {
	for h, want := range map[string]int{"bytes=0-": 0, "bytes=17-": 17, "bytes=17-20": 17, " bytes=3- ": 3} {
		if n, ok := rangeStart(h); !ok || n != want {
			t.Errorf("%q: %d %v", h, n, ok)
		}
	}
	for _, h := range []string{"", "bytes=-5", "bytes=a-", "items=1-", "bytes=1-2,4-5", "bytes=99999999999999999999-"} {
		if _, ok := rangeStart(h); ok {
			t.Errorf("%q accepted", h)
		}
	}
}

// TestStateNames: only the protocol's six values, new until the upload is
// recorded.
func TestStateNames(t *testing.T) {
	for s, want := range map[store.State]string{
		store.StateDraft: "new", store.StateQueued: "pending", store.StateProcessing: "progress", store.StateTesting: "done",
		store.StateDone: "done", store.StateDelivered: "done", store.StateFailed: "failed", store.StateCancelled: "cancelled",
	} {
		if got := stateName(s); got != want {
			t.Errorf("%s: %s, want %s", s, got, want)
		}
	}
}

// TestScrub: an rsync message names the transfer folder by the path rsync
// works in, its links resolved; neither form reaches the client.
func TestScrub(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "work")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{
		`rsync: [receiver] write failed on "` + real + `/origin.sql": No space left on device (28)`,
		`rsync: [receiver] write failed on "` + link + `/origin.sql": No space left on device (28)`,
	} {
		got := scrub(msg, link)
		if strings.Contains(got, real) || strings.Contains(got, link) || !strings.Contains(got, `"/data/origin.sql"`) {
			t.Errorf("scrub(%q) = %q", msg, got)
		}
	}
	if got := scrub("", link); got != "rsync failed" {
		t.Errorf("scrub of nothing = %q", got)
	}
}
