package sshauth

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	l := NewLimiter()
	now := l.now()
	l.now = func() time.Time { return now }
	for i := range freeFailures {
		if d := l.Delay("h"); d != 0 {
			t.Fatalf("after %d failures delay = %v, want 0", i, d)
		}
		l.Fail("h")
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for _, w := range want {
		if d := l.Delay("h"); d != w {
			t.Fatalf("delay = %v, want %v", d, w)
		}
		l.Fail("h")
	}
	if d := l.Delay("other"); d != 0 {
		t.Errorf("another address waits %v", d)
	}
	now = now.Add(forgetAfter + time.Second)
	if d := l.Delay("h"); d != 0 {
		t.Errorf("after ten quiet minutes delay = %v", d)
	}
	l.Fail("h")
	l.Succeed("h")
	if d := l.Delay("h"); d != 0 {
		t.Errorf("after a success delay = %v", d)
	}
}
