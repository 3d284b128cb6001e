package rsyncd

import (
	"sync"
	"time"
)

// authLimiter slows down authentication from addresses that keep failing,
// as the SFTP daemon does: the first three failures are free, then each
// attempt waits 250 ms, doubling up to 5 s; a success or ten quiet minutes
// forget the address. One limiter serves every endpoint of a Server, so a
// client cannot reset its count by trying another port.
type authLimiter struct {
	mu       sync.Mutex
	failures map[string]*failures
	now      func() time.Time
}

type failures struct {
	n    int
	last time.Time
}

func newAuthLimiter() *authLimiter {
	return &authLimiter{failures: map[string]*failures{}, now: time.Now}
}

const (
	freeFailures = 3
	firstDelay   = 250 * time.Millisecond
	maxAuthDelay = 5 * time.Second
	forgetAfter  = 10 * time.Minute
	maxTracked   = 100000
)

// delay is how long the next attempt from host waits.
func (l *authLimiter) delay(host string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failures[host]
	if f == nil || l.now().Sub(f.last) > forgetAfter || f.n < freeFailures {
		return 0
	}
	d := firstDelay << min(f.n-freeFailures, 8)
	return min(d, maxAuthDelay)
}

// wait sleeps for host's delay, or until stop is closed.
func (l *authLimiter) wait(stop <-chan struct{}, host string) {
	d := l.delay(host)
	if d == 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
	case <-t.C:
	}
}

func (l *authLimiter) fail(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.failures) >= maxTracked {
		for h, f := range l.failures {
			if now.Sub(f.last) > forgetAfter {
				delete(l.failures, h)
			}
		}
	}
	f := l.failures[host]
	if f == nil {
		if len(l.failures) >= maxTracked {
			return
		}
		f = &failures{}
		l.failures[host] = f
	}
	if now.Sub(f.last) > forgetAfter {
		f.n = 0
	}
	f.n++
	f.last = now
}

func (l *authLimiter) succeed(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, host)
}
