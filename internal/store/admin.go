package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ListFilter narrows ListRequests.
type ListFilter struct {
	State State // "" for any
	Limit int   // default 100
}

// ListRequests returns requests, newest first.
func (s *Store) ListRequests(ctx context.Context, f ListFilter) ([]Request, error) {
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT `+requestColumns+` FROM requests
		WHERE $1 = '' OR state = $1 ORDER BY id DESC LIMIT $2`, string(f.State), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	defer rows.Close()
	var out []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ForceState moves a request to any state (an operator's decision),
// releasing leases, and logs why. It fails with ErrNotFound.
func (s *Store) ForceState(ctx context.Context, id int64, to State, customerMessage string) (Request, error) {
	var out Request
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := lockRequest(ctx, tx, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE requests SET state = $2, state_changed_at = now(),
			customer_message = COALESCE($3, customer_message), lease_owner = NULL, lease_until = NULL,
			queued_at = CASE WHEN $2 = 'queued' THEN now() ELSE queued_at END,
			finished_at = CASE WHEN $2 IN ('done', 'delivered', 'failed', 'cancelled', 'testing') THEN now() ELSE finished_at END
			WHERE id = $1`, id, to, nullable(customerMessage))
		if err != nil {
			return fmt.Errorf("store: force state %d: %w", id, err)
		}
		if to == StateQueued {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, QueueChannel, fmt.Sprint(id)); err != nil {
				return err
			}
		}
		if err := addEvent(ctx, tx, id, "warning", "An operator moved the request to "+string(to)+"."); err != nil {
			return err
		}
		out, err = getRequest(ctx, tx, id)
		return err
	})
	return out, err
}

// SetScenario gives a request a scenario (or none, with nil).
func (s *Store) SetScenario(ctx context.Context, id int64, scenario *string, holdPolls int) (Request, error) {
	r, err := scanRequest(s.pool.QueryRow(ctx, `UPDATE requests SET scenario = $2, hold_polls = $3, status_polls = 0
		WHERE id = $1 RETURNING `+requestColumns, id, scenario, holdPolls))
	if err != nil {
		return Request{}, fmt.Errorf("store: set scenario %d: %w", id, err)
	}
	return r, nil
}

// DeleteRequest removes a request and its keys and log, and records it as
// deleted until ForgetDeleted (its files are the caller's to remove).
func (s *Store) DeleteRequest(ctx context.Context, id int64) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM requests WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("store: delete %d: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return markDeleted(ctx, tx, []int64{id})
	})
}

// DeleteAllRequests removes every request and returns their ids (to
// remove their files), recorded as deleted until ForgetDeleted.
func (s *Store) DeleteAllRequests(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM requests RETURNING id`)
		if err != nil {
			return fmt.Errorf("store: reset: %w", err)
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return fmt.Errorf("store: reset: %w", err)
		}
		return markDeleted(ctx, tx, ids)
	})
	return ids, err
}

func markDeleted(ctx context.Context, tx pgx.Tx, ids []int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO deleted_requests (id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING`, ids); err != nil {
		return fmt.Errorf("store: record deletions: %w", err)
	}
	return nil
}

// DeletedRequests returns the requests deleted whose files may be left.
func (s *Store) DeletedRequests(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM deleted_requests ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: deleted requests: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("store: deleted requests: %w", err)
	}
	return ids, nil
}

// ForgetDeleted drops the deletion records of ids once their files are gone.
func (s *Store) ForgetDeleted(ctx context.Context, ids []int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM deleted_requests WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("store: forget deletions: %w", err)
	}
	return nil
}

// QueueDepth counts requests waiting for a worker and being processed.
func (s *Store) QueueDepth(ctx context.Context) (queued, processing int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'processing')
		FROM requests WHERE state IN ('queued', 'processing')`).Scan(&queued, &processing)
	if err != nil {
		return 0, 0, fmt.Errorf("store: queue depth: %w", err)
	}
	return queued, processing, nil
}
