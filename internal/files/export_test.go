package files

import (
	"context"
	"time"
)

// SetCrashAfter makes s's set commits stop as a crash would once n members
// are stored (0: never).
func SetCrashAfter(s *Store, n int) { s.crashAfter = n }

// SetStaleAfter sets how old a set's commit marker must be for a sweep to
// take its process for dead.
func SetStaleAfter(s *Store, d time.Duration) { s.setStale = d }

// RawKeys lists the keys the backend holds under p, whatever they are.
func RawKeys(ctx context.Context, s *Store, p string) ([]string, error) {
	infos, err := s.b.list(ctx, p)
	var out []string
	for _, i := range infos {
		out = append(out, string(i.Name))
	}
	return out, err
}

// LocalPath is the path of key on the local backend ("": another backend).
func LocalPath(s *Store, key string) string {
	if l, ok := s.b.(*local); ok {
		return l.path(key)
	}
	return ""
}
