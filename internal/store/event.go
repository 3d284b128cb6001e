package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Event is one timestamped line of a request's log.
type Event struct {
	At      time.Time
	Level   string // info, warning or error
	Message string
}

// AddEvent appends a line to a request's log.
func (s *Store) AddEvent(ctx context.Context, id int64, level, message string) error {
	return addEvent(ctx, s.pool, id, level, message)
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func addEvent(ctx context.Context, tx execer, id int64, level, message string) error {
	_, err := tx.Exec(ctx, `INSERT INTO request_events (request_id, level, message) VALUES ($1, $2, $3)`, id, level, message)
	if err != nil {
		return fmt.Errorf("store: add event %d: %w", id, err)
	}
	return nil
}

// Events returns the last limit lines of a request's log, oldest first.
func (s *Store) Events(ctx context.Context, id int64, limit int) ([]Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT at, level, message FROM (
		SELECT id, at, level, message FROM request_events WHERE request_id = $1 ORDER BY id DESC LIMIT $2
	) e ORDER BY id`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("store: events %d: %w", id, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
		var e Event
		err := row.Scan(&e.At, &e.Level, &e.Message)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: events %d: %w", id, err)
	}
	return evs, nil
}
