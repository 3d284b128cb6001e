package httpapi

import (
	"sync"
	"time"
)

// JournalEntry is one v1 call as the admin journal shows it.
type JournalEntry struct {
	At        time.Time `json:"at"`
	Method    string    `json:"method"`
	HTTP      string    `json:"http_method"`
	RequestID string    `json:"request_id,omitempty"`
	Failures  []string  `json:"failures"`
	// ClientGone: the client went away before the answer (none was sent).
	ClientGone bool    `json:"client_gone,omitempty"`
	Duration   float64 `json:"duration_ms"`
	ClientIP   string  `json:"client_ip"`
	Reference  string  `json:"correlation_id"`
}

// journal keeps the last calls of this process in a ring.
type journal struct {
	mu      sync.Mutex
	entries []JournalEntry
	next    int
	full    bool
}

func newJournal(size int) *journal {
	if size <= 0 {
		size = 1000
	}
	return &journal{entries: make([]JournalEntry, size)}
}

func (j *journal) add(e JournalEntry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries[j.next] = e
	j.next = (j.next + 1) % len(j.entries)
	if j.next == 0 {
		j.full = true
	}
}

// last returns up to n entries, newest first.
func (j *journal) last(n int) []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	count := j.next
	if j.full {
		count = len(j.entries)
	}
	if n <= 0 || n > count {
		n = count
	}
	out := make([]JournalEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, j.entries[(j.next-i+len(j.entries))%len(j.entries)])
	}
	return out
}

func (j *journal) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.next, j.full = 0, false
	clear(j.entries)
}
