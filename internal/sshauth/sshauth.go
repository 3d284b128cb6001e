// Package sshauth holds what the server's SSH listeners (the SFTP daemon
// and the per-transfer rsync endpoints) share about the clients that try
// to log in: a limiter that slows down addresses that keep failing, and
// the address a connection is counted under.
package sshauth

import (
	"net"
	"sync"
	"time"
)

// Limiter slows down authentication from addresses that keep failing:
// the first three failures are free, then each attempt waits 250 ms,
// doubling up to 5 s; a success or ten quiet minutes forget the address.
// At most 100,000 addresses are tracked (the quiet ones are dropped first;
// past that, new ones are not counted). Safe for concurrent use.
type Limiter struct {
	mu       sync.Mutex
	failures map[string]*failures
	now      func() time.Time
}

type failures struct {
	n    int
	last time.Time
}

// NewLimiter returns a limiter that remembers no failure.
func NewLimiter() *Limiter {
	return &Limiter{failures: map[string]*failures{}, now: time.Now}
}

const (
	freeFailures = 3
	firstDelay   = 250 * time.Millisecond
	maxDelay     = 5 * time.Second
	forgetAfter  = 10 * time.Minute
	maxTracked   = 100000
)

// Delay is how long the next attempt from host waits.
func (l *Limiter) Delay(host string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failures[host]
	if f == nil || l.now().Sub(f.last) > forgetAfter || f.n < freeFailures {
		return 0
	}
	return min(firstDelay<<min(f.n-freeFailures, 8), maxDelay)
}

// Wait sleeps for host's delay, or until stop is closed.
func (l *Limiter) Wait(stop <-chan struct{}, host string) {
	d := l.Delay(host)
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

// Fail counts a failed attempt from host.
func (l *Limiter) Fail(host string) {
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

// Succeed forgets host's failures.
func (l *Limiter) Succeed(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, host)
}

// RemoteHost is the host part of a connection's remote address (the
// whole address when it has no port; "" for none).
func RemoteHost(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
