package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// What the pages for people read: the operator console's overview (counts,
// queue, running jobs, failures, search) and a request's log line by line.

// Overview is a request with what only the console shows: the upgraded
// dump's size and, while a worker holds it, that worker and its lease.
type Overview struct {
	Request
	UpgradedSize *int64
	// LeaseOwner is the worker running the request (nil unless processing).
	LeaseOwner *string
	LeaseUntil *time.Time
	Attempts   int
}

// overviewColumns are requestColumns and the console's own, scanned by
// scanOverview.
const overviewColumns = requestColumns + `, upgraded_size, lease_owner, lease_until, attempts`

// rowScanner is a pgx.Row or pgx.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// extraRow scans requestColumns through scanRequest, then the columns
// that follow them into extra.
type extraRow struct {
	row   rowScanner
	extra []any
}

func (e extraRow) Scan(dest ...any) error { return e.row.Scan(append(dest, e.extra...)...) }

func scanOverview(row rowScanner) (Overview, error) {
	var o Overview
	r, err := scanRequest(extraRow{row, []any{&o.UpgradedSize, &o.LeaseOwner, &o.LeaseUntil, &o.Attempts}})
	o.Request = r
	return o, err
}

func (s *Store) overviews(ctx context.Context, what, query string, args ...any) ([]Overview, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []Overview
	for rows.Next() {
		o, err := scanOverview(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", what, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}

// CountByState counts the requests in each state (states without any are
// absent).
func (s *Store) CountByState(ctx context.Context) (map[State]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM requests GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("store: count by state: %w", err)
	}
	defer rows.Close()
	out := map[State]int{}
	for rows.Next() {
		var st State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("store: count by state: %w", err)
		}
		out[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: count by state: %w", err)
	}
	return out, nil
}

func clampLimit(n int) int {
	if n <= 0 || n > 1000 {
		return 100
	}
	return n
}

// Queue returns the queued requests in the order workers take them
// (ClaimNext): the oldest waiting first.
func (s *Store) Queue(ctx context.Context, limit int) ([]Overview, error) {
	return s.overviews(ctx, "queue", `SELECT `+overviewColumns+` FROM requests
		WHERE state = 'queued' ORDER BY queued_at, id LIMIT $1`, clampLimit(limit))
}

// Running returns the requests a worker is processing, longest running
// first, with their worker (LeaseOwner) and lease.
func (s *Store) Running(ctx context.Context, limit int) ([]Overview, error) {
	return s.overviews(ctx, "running", `SELECT `+overviewColumns+` FROM requests
		WHERE state = 'processing' ORDER BY processed_at NULLS LAST, id LIMIT $1`, clampLimit(limit))
}

// RecentFailures returns the failed requests, the latest failure first;
// CustomerMessage holds each one's reason.
func (s *Store) RecentFailures(ctx context.Context, limit int) ([]Overview, error) {
	return s.overviews(ctx, "recent failures", `SELECT `+overviewColumns+` FROM requests
		WHERE state = 'failed' ORDER BY state_changed_at DESC, id DESC LIMIT $1`, clampLimit(limit))
}

// Search narrows SearchRequests.
type Search struct {
	// Text is found, case-insensitively, in the file name, the contract or
	// the e-mail address, or is the id when it is a number; "#12" is the
	// id 12 only. "" matches every request.
	Text  string
	State State // "" for any
	Limit int   // default 100, at most 1000
}

// SearchRequests returns the requests that match f, newest first.
func (s *Store) SearchRequests(ctx context.Context, f Search) ([]Overview, error) {
	text := strings.TrimSpace(f.Text)
	var id int64
	idOnly := false
	if rest, ok := strings.CutPrefix(text, "#"); ok {
		text, idOnly = "", true
		id, _ = strconv.ParseInt(strings.TrimSpace(rest), 10, 64) // 0 matches nothing
	} else if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		id = n
	}
	return s.overviews(ctx, "search", `SELECT `+overviewColumns+` FROM requests
		WHERE ($1 = '' OR state = $1)
		AND (CASE WHEN $5 THEN id = $3
			ELSE $2 = '' OR id = $3 OR strpos(lower(filename), lower($2)) > 0
				OR strpos(lower(contract), lower($2)) > 0 OR strpos(lower(email), lower($2)) > 0 END)
		ORDER BY id DESC LIMIT $4`, string(f.State), text, id, clampLimit(f.Limit), idOnly)
}

// Overview returns one request with the console's columns, or ErrNotFound.
func (s *Store) Overview(ctx context.Context, id int64) (Overview, error) {
	o, err := scanOverview(s.pool.QueryRow(ctx, `SELECT `+overviewColumns+` FROM requests WHERE id = $1`, id))
	if err != nil {
		return Overview{}, fmt.Errorf("store: overview %d: %w", id, err)
	}
	return o, nil
}

// LogLine is one line of a request's log with its position (IDs grow with
// each line of every request).
type LogLine struct {
	ID int64
	Event
}

// LogSince returns the newest limit lines of a request's log whose ID is
// above after (0: from the start), oldest first. A page that shows the log
// asks again with the last ID it got, and gets only the new lines.
func (s *Store) LogSince(ctx context.Context, id, after int64, limit int) ([]LogLine, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, level, message FROM (
		SELECT id, at, level, message FROM request_events WHERE request_id = $1 AND id > $2 ORDER BY id DESC LIMIT $3
	) e ORDER BY id`, id, after, clampLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("store: log of %d: %w", id, err)
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		if err := rows.Scan(&l.ID, &l.At, &l.Level, &l.Message); err != nil {
			return nil, fmt.Errorf("store: log of %d: %w", id, err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: log of %d: %w", id, err)
	}
	return out, nil
}
