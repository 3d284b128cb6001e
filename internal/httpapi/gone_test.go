package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// stallingStore blocks every lookup until the caller's context ends, and
// says when one started.
type stallingStore struct {
	*store.Store
	entered chan struct{}
}

func (s stallingStore) Request(ctx context.Context, id int64) (store.Request, error) {
	s.entered <- struct{}{}
	<-ctx.Done()
	return store.Request{}, ctx.Err()
}

// levels records the level of every log line.
type levels struct {
	mu   sync.Mutex
	seen []slog.Record
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, r)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// TestClientGoneIsNotAServerError: a call whose client disconnects is
// counted as client_gone, logged below ERROR, and gets no answer.
func TestClientGoneIsNotAServerError(t *testing.T) {
	t.Parallel()
	st, _ := pgtest.NewStore(t)
	logs := &levels{}
	m := metrics.New(nil)
	stall := stallingStore{Store: st, entered: make(chan struct{}, 8)}
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler), files.Config{Local: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.NewHandler(slog.New(logs), httpapi.Config{Requests: stall, Files: fs, Region: "eu1",
		Rules: input.Rules{Targets: targets}, Metrics: m})
	finished := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if strings.HasPrefix(r.URL.Path, "/database/") {
			finished <- struct{}{}
		}
	}))
	t.Cleanup(srv.Close)

	for _, path := range []string{"/database/v1/status?request=1&key=k", "/database/eu1/1/k/original/archive"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-stall.entered
		cancel() // the client goes away while the server is busy
		if err := <-errc; err == nil {
			t.Fatalf("%s: the cancelled call got an answer", path)
		}
		<-finished
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `upgrade_api_calls_total{method="status",outcome="client_gone"} 1`) ||
		strings.Contains(string(b), `SERVER:ERROR`) {
		t.Fatalf("metrics:\n%s", grepLines(string(b), "upgrade_api_calls_total"))
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, r := range logs.seen {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged at %s: %s", r.Level, r.Message)
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
