package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// QueueChannel is the LISTEN/NOTIFY channel that announces queued requests.
const QueueChannel = "upgrade_queue"

// Job is a claimed request with its attempt count.
type Job struct {
	Request
	Attempts  int
	ScratchDB *string // left by an earlier, interrupted attempt
}

// ClaimNext takes the oldest queued request, or a processing one whose
// lease expired (its worker died), for owner until lease from now. The
// request moves to processing and its attempt count grows. It returns
// false when there is nothing to do. Concurrent claimers never get the same
// request (FOR UPDATE SKIP LOCKED).
func (s *Store) ClaimNext(ctx context.Context, owner string, lease time.Duration) (Job, bool, error) {
	var j Job
	row := s.pool.QueryRow(ctx, `
		UPDATE requests SET state = 'processing', lease_owner = $1, lease_until = now() + $2::interval,
			attempts = attempts + 1, processed_at = COALESCE(processed_at, now()), state_changed_at = now()
		WHERE id = (
			SELECT id FROM requests
			WHERE (state = 'queued' AND status_polls >= hold_polls) OR (state = 'processing' AND lease_until < now())
			ORDER BY queued_at, id
			LIMIT 1
			FOR UPDATE SKIP LOCKED)
		RETURNING attempts, scratch_db, id`, owner, lease)
	var id int64
	if err := row.Scan(&j.Attempts, &j.ScratchDB, &id); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return Job{}, false, nil
		}
		return Job{}, false, fmt.Errorf("store: claim: %w", err)
	}
	r, err := s.Request(ctx, id)
	if err != nil {
		return Job{}, false, err
	}
	j.Request = r
	return j, true, nil
}

// Heartbeat renews owner's lease on a processing request. It fails with
// ErrLeaseLost when the lease was taken over or the request moved on.
func (s *Store) Heartbeat(ctx context.Context, id int64, owner string, lease time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE requests SET lease_until = now() + $3::interval
		WHERE id = $1 AND lease_owner = $2 AND state = 'processing'`, id, owner, lease)
	if err != nil {
		return fmt.Errorf("store: heartbeat %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Inspection is what the pipeline learned about the upload.
type Inspection struct {
	Compressions    []string
	PostgreSQL      string
	DatabaseVersion string
	DatabaseUUID    string
	Filestore       bool
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// SetInspection records the upload's facts while owner holds the lease.
func (s *Store) SetInspection(ctx context.Context, id int64, owner string, in Inspection) error {
	comp := in.Compressions
	if comp == nil {
		comp = []string{}
	}
	tag, err := s.pool.Exec(ctx, `UPDATE requests SET compressions = $3, postgresql = $4, database_version = $5,
		database_uuid = $6, filestore = $7, source_version = $5
		WHERE id = $1 AND lease_owner = $2 AND state = 'processing'`,
		id, owner, comp, nullable(in.PostgreSQL), nullable(in.DatabaseVersion), nullable(in.DatabaseUUID), in.Filestore)
	if err != nil {
		return fmt.Errorf("store: inspection %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// SetScratchDB records (or clears, with "") the scratch database of the
// running attempt, so a later attempt can drop it after a crash.
func (s *Store) SetScratchDB(ctx context.Context, id int64, owner, name string) error {
	_, err := s.pool.Exec(ctx, `UPDATE requests SET scratch_db = $3 WHERE id = $1 AND lease_owner = $2`, id, owner, nullable(name))
	if err != nil {
		return fmt.Errorf("store: scratch db %d: %w", id, err)
	}
	return nil
}

// SetEstimate records the expected processing time.
func (s *Store) SetEstimate(ctx context.Context, id int64, seconds int32) error {
	_, err := s.pool.Exec(ctx, `UPDATE requests SET estimated_seconds = $2 WHERE id = $1`, id, seconds)
	if err != nil {
		return fmt.Errorf("store: estimate %d: %w", id, err)
	}
	return nil
}

// Outcome ends a processing attempt.
type Outcome struct {
	State           State // done, testing or failed
	CustomerMessage string
	UpgradedSize    int64
}

// Finish moves owner's processing request to its outcome and releases the
// lease. It fails with ErrLeaseLost when owner no longer holds it.
func (s *Store) Finish(ctx context.Context, id int64, owner string, o Outcome) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE requests SET state = $3, customer_message = $4, finished_at = now(),
			state_changed_at = now(), lease_owner = NULL, lease_until = NULL,
			upgraded_size = CASE WHEN $5::bigint > 0 THEN $5::bigint ELSE upgraded_size END
			WHERE id = $1 AND lease_owner = $2 AND state = 'processing'`, id, owner, o.State, nullable(o.CustomerMessage), o.UpgradedSize)
		if err != nil {
			return fmt.Errorf("store: finish %d: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrLeaseLost
		}
		msg := "Upgrade done."
		level := "info"
		switch o.State {
		case StateFailed:
			msg, level = "Upgrade failed: "+o.CustomerMessage, "error"
		case StateTesting:
			msg = "Upgrade done; held for testing until skip_test."
		}
		return addEvent(ctx, tx, id, level, msg)
	})
}

// ProcessingStats returns the mean seconds per GiB of past successful
// runs (0 when there are none), for estimates.
func (s *Store) ProcessingStats(ctx context.Context) (float64, error) {
	var v *float64
	err := s.pool.QueryRow(ctx, `SELECT avg(extract(epoch FROM finished_at - processed_at) / greatest(upload_size, 1) * 1073741824)
		FROM (SELECT * FROM requests WHERE state IN ('done', 'delivered', 'testing') AND finished_at IS NOT NULL
			AND processed_at IS NOT NULL ORDER BY finished_at DESC LIMIT 50) r`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: stats: %w", err)
	}
	if v == nil {
		return 0, nil
	}
	return *v, nil
}

// LiveScratchDBs returns the scratch databases of requests whose attempt
// still holds a lease; any other scratch database is left from a crash.
func (s *Store) LiveScratchDBs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT scratch_db FROM requests WHERE scratch_db IS NOT NULL
		AND state = 'processing' AND lease_until > now()`)
	if err != nil {
		return nil, fmt.Errorf("store: scratch dbs: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: scratch dbs: %w", err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// ListenQueue calls notify for every request queued by any process (LISTEN
// on QueueChannel), until ctx ends. Connection errors are retried; callers
// poll as well, so a missed notification only delays work.
func (s *Store) ListenQueue(ctx context.Context, notify func()) error {
	return s.listen(ctx, QueueChannel, func(string) { notify() })
}

// ListenUploads calls stop for every upload a writer took over (TakeUpload,
// in any process), with the request id and the token of the writer
// replaced, until ctx ends. Connection errors are retried; writers also
// find out when they next renew their lease, so a missed notification only
// delays the stop.
func (s *Store) ListenUploads(ctx context.Context, stop func(id int64, token string)) error {
	return s.listen(ctx, UploadChannel, func(payload string) {
		idText, token, ok := strings.Cut(payload, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		if ok && err == nil && token != "" {
			stop(id, token)
		}
	})
}

// listen runs LISTEN channel on a connection of its own, calling fn with
// each payload, and starts again after a connection error, until ctx ends.
func (s *Store) listen(ctx context.Context, channel string, fn func(payload string)) error {
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, channel, fn)
		if ctx.Err() != nil {
			return nil
		}
		s.logger.Warn("LISTEN failed; listening again in a second", "channel", channel, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, channel string, fn func(payload string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	ident := pgx.Identifier{channel}.Sanitize()
	if _, err := conn.Exec(ctx, "LISTEN "+ident); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "UNLISTEN "+ident) //nolint:errcheck
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}
