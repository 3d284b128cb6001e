package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// queuedRequest makes a request with a complete upload and queues it.
func queuedRequest(t *testing.T, s *store.Store, n store.NewRequest) store.Request {
	t.Helper()
	ctx := context.Background()
	r, err := s.CreateRequest(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	tok := fmt.Sprint("t", r.ID)
	if err := s.BeginUpload(ctx, r.ID, tok, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CompleteUpload(ctx, r.ID, tok, store.Upload{Name: "upload-1", Size: 100 * r.ID, SHA256: "x"}); err != nil {
		t.Fatal(err)
	}
	if r, err = s.Process(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	return r
}

func overviewIDs(list []store.Overview) []int64 {
	var out []int64
	for _, o := range list {
		out = append(out, o.ID)
	}
	return out
}

// TestConsoleOverview: counts by state, the queue in the order workers
// take it, running jobs with their worker, failures newest first with
// their reasons.
func TestConsoleOverview(t *testing.T) {
	t.Parallel()
	s, _ := pgtest.NewStore(t)
	ctx := context.Background()
	req := func(file string) store.NewRequest {
		return store.NewRequest{Key: "k", Contract: "M1", Email: "a@example.com", Target: "16.0", Aim: "test", Filename: file}
	}
	newRequest(t, s) // a draft
	q1 := queuedRequest(t, s, req("one.dump"))
	q2 := queuedRequest(t, s, req("two.dump"))
	q3 := queuedRequest(t, s, req("three.dump"))
	q4 := queuedRequest(t, s, req("four.dump"))

	queue, err := s.Queue(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := overviewIDs(queue); !slices.Equal(got, []int64{q1.ID, q2.ID, q3.ID, q4.ID}) {
		t.Fatalf("queue %v", got)
	}
	// Workers take the head of the queue: the console's order is theirs.
	j, ok, err := s.ClaimNext(ctx, "host-1/worker-0", time.Minute)
	if err != nil || !ok || j.ID != q1.ID {
		t.Fatalf("claim: %v %v %v", j.ID, ok, err)
	}
	if _, _, err := s.ClaimNext(ctx, "host-2/worker-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	running, err := s.Running(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 2 || running[0].ID != q1.ID || *running[0].LeaseOwner != "host-1/worker-0" ||
		*running[1].LeaseOwner != "host-2/worker-1" || running[0].LeaseUntil == nil || running[0].Attempts != 1 {
		t.Fatalf("running %+v", running)
	}
	if err := s.Finish(ctx, q1.ID, "host-1/worker-0", store.Outcome{State: store.StateFailed, CustomerMessage: "first"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, q2.ID, "host-2/worker-1", store.Outcome{State: store.StateFailed, CustomerMessage: "second"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForceState(ctx, q3.ID, store.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	failures, err := s.RecentFailures(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failures) != 2 || failures[0].ID != q2.ID || *failures[0].CustomerMessage != "second" || failures[1].ID != q1.ID {
		t.Fatalf("failures %v", overviewIDs(failures))
	}
	counts, err := s.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[store.State]int{store.StateDraft: 1, store.StateQueued: 1, store.StateFailed: 2, store.StateDone: 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
	if running, _ := s.Running(ctx, 0); len(running) != 0 {
		t.Fatalf("running after finishing: %v", overviewIDs(running))
	}
}

func TestSearchRequests(t *testing.T) {
	t.Parallel()
	s, _ := pgtest.NewStore(t)
	ctx := context.Background()
	mk := func(contract, email, file string) store.Request {
		r, err := s.CreateRequest(ctx, store.NewRequest{Key: "k", Contract: contract, Email: email, Target: "16.0", Aim: "test", Filename: file})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := mk("M100-alpha", "ann@example.com", "Sales_2024.dump")
	b := mk("M200-beta", "bob@example.org", "100%_done.sql.gz")
	c := queuedRequest(t, s, store.NewRequest{Key: "k", Contract: "M300", Email: "cy@example.com", Target: "17.0", Aim: "production", Filename: "sales.zip"})
	cases := []struct {
		name string
		f    store.Search
		want []int64
	}{
		{"everything, newest first", store.Search{}, []int64{c.ID, b.ID, a.ID}},
		{"file name, any case", store.Search{Text: "SALES"}, []int64{c.ID, a.ID}},
		{"contract", store.Search{Text: "beta"}, []int64{b.ID}},
		{"e-mail", store.Search{Text: "example.org"}, []int64{b.ID}},
		{"a number: the id, or in the text", store.Search{Text: fmt.Sprint(a.ID)}, []int64{b.ID, a.ID}}, // 100%_done
		{"#id: the id only", store.Search{Text: fmt.Sprintf(" #%d ", a.ID)}, []int64{a.ID}},
		{"# without a number matches nothing", store.Search{Text: "#sales"}, nil},
		{"percent is a character, not a pattern", store.Search{Text: "%"}, []int64{b.ID}},
		{"underscore too", store.Search{Text: "s_2"}, []int64{a.ID}},
		{"state", store.Search{State: store.StateQueued}, []int64{c.ID}},
		{"state and text", store.Search{Text: "sales", State: store.StateDraft}, []int64{a.ID}},
		{"limit", store.Search{Limit: 1}, []int64{c.ID}},
		{"nothing", store.Search{Text: "zzz"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.SearchRequests(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(overviewIDs(got), tc.want) {
				t.Fatalf("got %v, want %v", overviewIDs(got), tc.want)
			}
		})
	}
	o, err := s.Overview(ctx, c.ID)
	if err != nil || o.Filename != "sales.zip" || o.State != store.StateQueued || o.Attempts != 0 || o.LeaseOwner != nil {
		t.Fatalf("overview: %+v %v", o, err)
	}
	if _, err := s.Overview(ctx, c.ID+100); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

// TestLogSince: a reader that gives the last line it got gets only the
// new ones, oldest first; limit keeps the newest.
func TestLogSince(t *testing.T) {
	t.Parallel()
	s, _ := pgtest.NewStore(t)
	ctx := context.Background()
	r := newRequest(t, s)
	other := newRequest(t, s)
	for i := 1; i <= 5; i++ {
		s.AddEvent(ctx, r.ID, "info", fmt.Sprint("line ", i))
		s.AddEvent(ctx, other.ID, "info", "elsewhere")
	}
	msgs := func(ls []store.LogLine) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.Message)
		}
		return out
	}
	all, err := s.LogSince(ctx, r.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := msgs(all); !slices.Equal(got, []string{"line 1", "line 2", "line 3", "line 4", "line 5"}) {
		t.Fatalf("all: %v", got)
	}
	last, _ := s.LogSince(ctx, r.ID, 0, 2)
	if got := msgs(last); !slices.Equal(got, []string{"line 4", "line 5"}) {
		t.Fatalf("the last two: %v", got)
	}
	none, _ := s.LogSince(ctx, r.ID, all[4].ID, 100)
	if len(none) != 0 {
		t.Fatalf("after the last line: %v", msgs(none))
	}
	s.AddEvent(ctx, r.ID, "warning", "line 6")
	more, _ := s.LogSince(ctx, r.ID, all[4].ID, 100)
	if len(more) != 1 || more[0].Message != "line 6" || more[0].Level != "warning" || more[0].ID <= all[4].ID {
		t.Fatalf("new lines: %+v", more)
	}
}
