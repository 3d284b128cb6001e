package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// TestRequestByToken: a request of Odoo's client is found by its token's
// hash, with its env_vars, key and output; once deleted its token answers
// ErrArchived with the state it had; an unknown hash, ErrNotFound.
func TestRequestByToken(t *testing.T) {
	t.Parallel()
	s, _ := pgtest.NewStore(t)
	ctx := context.Background()
	hash, key := "ab12", "ssh-ed25519 AAAA"
	r, err := s.CreateRequest(ctx, store.NewRequest{Key: "k", Contract: "M1", Target: "16.0", Aim: "test", Filename: "origin.dump",
		TokenHash: &hash, EnvVars: []string{"A=1", "B=two words"}, SSHKey: &key, Output: store.OutputDirectory})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.RequestByToken(ctx, hash)
	if err != nil || got.ID != r.ID || !slices.Equal(got.EnvVars, []string{"A=1", "B=two words"}) || *got.SSHKey != key ||
		got.Output != store.OutputDirectory {
		t.Fatalf("by token: %+v %v", got, err)
	}
	if _, err := s.RequestByToken(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	if err := s.SetUploadOrigin(ctx, r.ID, "origin.sql", "15/"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Request(ctx, r.ID); got.Filename != "origin.sql" || *got.ClientArchive != "15/" {
		t.Fatalf("after SetUploadOrigin: %+v", got)
	}
	if _, err := s.Transition(ctx, r.ID, store.StateFailed, "", store.StateDraft); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRequest(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	old, err := s.RequestByToken(ctx, hash)
	if !errors.Is(err, store.ErrArchived) || old.State != store.StateFailed {
		t.Fatalf("a deleted request's token: %+v %v", old, err)
	}
	// v1 requests have no token: none of them is archived.
	v1 := newRequest(t, s)
	if err := s.DeleteRequest(ctx, v1.ID); err != nil {
		t.Fatal(err)
	}
}

// TestTransfers: one live transfer per request; its owner renews and ends
// it; another owner is refused while it lives and replaces it once its
// lease expired; a stop request reaches the owner through LISTEN.
func TestTransfers(t *testing.T) {
	t.Parallel()
	s, _ := pgtest.NewStore(t)
	ctx := context.Background()
	r := newRequest(t, s)
	draft := []store.State{store.StateDraft}
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionDownload, "a", 4000, time.Minute, nil, store.StateDone); !errors.Is(err, store.ErrBadTransition) {
		t.Fatalf("a download of a draft: %v", err)
	}
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionUpload, "a", 4000, time.Minute, nil, draft...); err != nil {
		t.Fatal(err)
	}
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionUpload, "b", 4001, time.Minute, nil, draft...); !errors.Is(err, store.ErrTransferBusy) {
		t.Fatalf("a second owner: %v", err)
	}
	mine := func(t store.Transfer) bool { return t.Owner == "a" }
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionUpload, "a", 4002, time.Minute, mine, draft...); err != nil {
		t.Fatalf("the owner replacing its own: %v", err)
	}
	if err := s.RenewTransfer(ctx, r.ID, "b", time.Minute); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("renewal by another: %v", err)
	}
	if err := s.RenewTransfer(ctx, r.ID, "a", time.Minute); err != nil {
		t.Fatal(err)
	}

	heard := make(chan int64, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.ListenTransferStops(lctx, func(id int64) { heard <- id })
	// The listener may not be listening yet: ask until it hears.
	deadline := time.After(30 * time.Second)
	for done := false; !done; {
		if _, err := s.RequestTransferStop(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-heard:
			if id != r.ID {
				t.Fatalf("heard %d", id)
			}
			done = true
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("the stop request never reached the listener")
		}
	}
	if err := s.FinishTransfer(ctx, r.ID, "a", "failed", "cut"); err != nil {
		t.Fatal(err)
	}
	tr, err := s.TransferOf(ctx, r.ID)
	if err != nil || tr.Live || tr.Outcome != "failed" || tr.Error != "cut" || !tr.StopRequested || tr.Port != 4002 {
		t.Fatalf("after finish: %+v %v", tr, err)
	}
	if err := s.RenewTransfer(ctx, r.ID, "a", time.Minute); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("renewal of an ended transfer: %v", err)
	}
	// Ended: anyone may open the next.
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionUpload, "b", 4003, 50*time.Millisecond, nil, draft...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // b's lease expires: b is gone
	if err := s.OpenTransfer(ctx, r.ID, store.DirectionUpload, "c", 4004, time.Minute, nil, draft...); err != nil {
		t.Fatalf("after the owner's lease expired: %v", err)
	}
	if _, err := s.TransferOf(ctx, newRequest(t, s).ID); !errors.Is(err, store.ErrNoTransfer) {
		t.Fatalf("a request without a transfer: %v", err)
	}
}
