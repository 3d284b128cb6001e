package datadir

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLockUploadExcludesAndWaits(t *testing.T) {
	t.Parallel()
	d := New(t.TempDir())
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := d.LockUpload(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := d.LockUpload(short, 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second holder got the lock: %v", err)
	}
	other, err := d.LockUpload(ctx, 8) // another request: no wait
	if err != nil {
		t.Fatal(err)
	}
	other.Release()
	got := make(chan *Lock, 1)
	go func() {
		l, err := d.LockUpload(ctx, 7)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	first.Release()
	second := <-got // the waiter gets it once the first lets go
	second.Release()
	second.Release() // twice is harmless
	// The abandoned waiter of the timed-out call did not keep it.
	third, err := d.LockUpload(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	third.Release()
}
