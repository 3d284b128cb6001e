package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/token"
)

// sessions are the console's signed-in browsers, in this process's
// memory: a random id in an HttpOnly cookie names one (the admin token
// itself never leaves the sign-in form). A session ends at sign-out, after
// idle without use, or max after sign-in; a restart ends them all.
type sessions struct {
	mu        sync.Mutex
	byHash    map[[32]byte]*session // by sha256 of the id: the id itself is kept nowhere
	now       func() time.Time
	idle, max time.Duration
}

type session struct {
	csrf    string // the token every state-changing form carries
	created time.Time
	seen    time.Time
}

// maxSessions bounds the sessions kept: past it the oldest go first.
const maxSessions = 1000

func newSessions(now func() time.Time, idle, max time.Duration) *sessions {
	return &sessions{byHash: map[[32]byte]*session{}, now: now, idle: idle, max: max}
}

// start makes a session and returns its id (for the cookie).
func (s *sessions) start() (id string, sess session) {
	id = token.Hex(32)
	now := s.now()
	ns := &session{csrf: token.Hex(32), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(now)
	for len(s.byHash) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for h, o := range s.byHash {
			if at.IsZero() || o.created.Before(at) {
				oldest, at = h, o.created
			}
		}
		delete(s.byHash, oldest)
	}
	s.byHash[sha256.Sum256([]byte(id))] = ns
	return id, *ns
}

// sessionState says what a cookie's session is.
type sessionState int

const (
	sessionNone    sessionState = iota // no cookie, or a session this process never had (or forgot)
	sessionExpired                     // it was, and has expired
	sessionValid
)

// get finds the session id names and marks it used. An expired session is
// forgotten, and reported as such once.
func (s *sessions) get(id string) (session, sessionState) {
	if id == "" {
		return session{}, sessionNone
	}
	h := sha256.Sum256([]byte(id))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.byHash[h]
	if !ok {
		return session{}, sessionNone
	}
	if s.expired(sess, now) {
		delete(s.byHash, h)
		return session{}, sessionExpired
	}
	sess.seen = now
	return *sess, sessionValid
}

// end forgets a session (sign-out).
func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.byHash, sha256.Sum256([]byte(id)))
	s.mu.Unlock()
}

func (s *sessions) expired(sess *session, now time.Time) bool {
	return now.Sub(sess.seen) > s.idle || now.Sub(sess.created) > s.max
}

// prune forgets the expired sessions; the caller holds mu.
func (s *sessions) prune(now time.Time) {
	for h, sess := range s.byHash {
		if s.expired(sess, now) {
			delete(s.byHash, h)
		}
	}
}

// equalSecret compares two secrets in constant time, whatever their
// lengths (their hashes are compared).
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// limiter slows down guessing of the admin token, per client address:
// after freeAttempts wrong tokens in a row, sign-in is refused (without
// looking at the token) for a pause that doubles with each further wrong
// one, up to maxPause. A right token clears the address.
type limiter struct {
	mu  sync.Mutex
	by  map[string]*failures
	now func() time.Time
}

type failures struct {
	n     int
	until time.Time // refused before this
	last  time.Time
}

const (
	freeAttempts = 3
	firstPause   = time.Second
	maxPause     = 30 * time.Second
	// forgetAfter: an address without a failure for this long starts over.
	forgetAfter = 15 * time.Minute
	maxAddrs    = 10000
)

func newLimiter(now func() time.Time) *limiter {
	return &limiter{by: map[string]*failures{}, now: now}
}

// wait returns how long addr must wait before its next attempt (0: it may
// try now).
func (l *limiter) wait(addr string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.by[addr]
	if f == nil || now.Sub(f.last) > forgetAfter {
		return 0
	}
	if d := f.until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// failed records a wrong token from addr.
func (l *limiter) failed(addr string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.by[addr]
	if f == nil || now.Sub(f.last) > forgetAfter {
		if len(l.by) >= maxAddrs {
			for a, o := range l.by {
				if now.Sub(o.last) > forgetAfter {
					delete(l.by, a)
				}
			}
		}
		if len(l.by) >= maxAddrs { // still full: a flood; forget the lot rather than grow
			clear(l.by)
		}
		f = &failures{}
		l.by[addr] = f
	}
	f.n++
	f.last = now
	if f.n >= freeAttempts {
		pause := firstPause << min(f.n-freeAttempts, 10)
		f.until = now.Add(min(pause, maxPause))
	}
}

// succeeded clears addr's failures.
func (l *limiter) succeeded(addr string) {
	l.mu.Lock()
	delete(l.by, addr)
	l.mu.Unlock()
}
