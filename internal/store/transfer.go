package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Errors of the requests of Odoo's own client. Match them with errors.Is.
var (
	// ErrArchived: the token was a request's that has been deleted.
	ErrArchived = errors.New("store: request archived")
	// ErrTransferBusy: another transfer of the request is open.
	ErrTransferBusy = errors.New("store: a transfer is open")
	// ErrNoTransfer: the request has no transfer.
	ErrNoTransfer = errors.New("store: no transfer")
)

// RequestByToken returns the request whose token has the hex sha256 hash.
// For a deleted request's token it fails with ErrArchived, returning the
// state and customer message the request had; for any other, with
// ErrNotFound.
func (s *Store) RequestByToken(ctx context.Context, hash string) (Request, error) {
	r, err := scanRequest(s.pool.QueryRow(ctx, `SELECT `+requestColumns+` FROM requests WHERE token_hash = $1`, hash))
	if !errors.Is(err, ErrNotFound) {
		if err != nil {
			return Request{}, fmt.Errorf("store: request by token: %w", err)
		}
		return r, nil
	}
	var old Request
	err = s.pool.QueryRow(ctx, `SELECT state, customer_message FROM archived_tokens WHERE token_hash = $1`, hash).
		Scan(&old.State, &old.CustomerMessage)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Request{}, ErrNotFound
	case err != nil:
		return Request{}, fmt.Errorf("store: request by token: %w", err)
	}
	return old, ErrArchived
}

// SetUploadOrigin records what an upload of Odoo's client was: its file
// name as sent (origin.dump, origin.sql…) and the archive version its
// pg_dump writes ("" when unknown).
func (s *Store) SetUploadOrigin(ctx context.Context, id int64, filename, clientArchive string) error {
	var archive *string
	if clientArchive != "" {
		archive = &clientArchive
	}
	if _, err := s.pool.Exec(ctx, `UPDATE requests SET filename = $2, client_archive = $3 WHERE id = $1`,
		id, filename, archive); err != nil {
		return fmt.Errorf("store: upload origin %d: %w", id, err)
	}
	return nil
}

// Direction is a transfer's way: what the client does.
type Direction string

// The transfer directions.
const (
	DirectionUpload   Direction = "upload"
	DirectionDownload Direction = "download"
)

// Transfer is a request's rsync transfer as recorded.
type Transfer struct {
	RequestID     int64
	Direction     Direction
	Owner         string // the process running its endpoint
	Port          int
	OpenedAt      time.Time
	LeaseUntil    time.Time
	StopRequested bool
	// Outcome is "" while open, else "ok" or "failed" with Error.
	Outcome string
	Error   string
	// Live is true while the owner's lease runs and the transfer is open.
	Live bool
}

// TransferChannel is the LISTEN/NOTIFY channel on which a transfer/stop
// that reached another process asks a transfer's owner to stop it; the
// payload is the request id.
const TransferChannel = "upgrade_transfer_stop"

func scanTransfer(row pgx.Row) (Transfer, error) {
	var t Transfer
	var outcome, msg *string
	err := row.Scan(&t.RequestID, &t.Direction, &t.Owner, &t.Port, &t.OpenedAt, &t.LeaseUntil, &t.StopRequested,
		&outcome, &msg, &t.Live)
	if errors.Is(err, pgx.ErrNoRows) {
		return Transfer{}, ErrNoTransfer
	}
	if outcome != nil {
		t.Outcome = *outcome
	}
	if msg != nil {
		t.Error = *msg
	}
	return t, err
}

const transferColumns = `request_id, direction, owner, port, opened_at, lease_until, stop_requested, outcome, error,
	(outcome IS NULL AND lease_until > now())`

// OpenTransfer records a transfer of request id in direction, run by owner
// on port, for lease from now. The request must be in one of the states
// allowed (a *StateError otherwise); a live transfer of the request fails
// it with ErrTransferBusy unless replace says that one may be replaced
// (it is then the caller's own, to close).
func (s *Store) OpenTransfer(ctx context.Context, id int64, d Direction, owner string, port int, lease time.Duration,
	replace func(Transfer) bool, allowed ...State) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := lockRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := needState(r, allowed...); err != nil {
			return err
		}
		old, err := scanTransfer(tx.QueryRow(ctx, `SELECT `+transferColumns+` FROM transfers WHERE request_id = $1`, id))
		switch {
		case errors.Is(err, ErrNoTransfer):
		case err != nil:
			return fmt.Errorf("store: open transfer %d: %w", id, err)
		case old.Live && (replace == nil || !replace(old)):
			return ErrTransferBusy
		}
		_, err = tx.Exec(ctx, `INSERT INTO transfers (request_id, direction, owner, port, lease_until)
			VALUES ($1, $2, $3, $4, now() + $5::interval)
			ON CONFLICT (request_id) DO UPDATE SET direction = $2, owner = $3, port = $4, opened_at = now(),
				lease_until = now() + $5::interval, stop_requested = false, outcome = NULL, error = NULL`,
			id, d, owner, port, lease)
		if err != nil {
			return fmt.Errorf("store: open transfer %d: %w", id, err)
		}
		return nil
	})
}

// RenewTransfer extends the lease of owner's open transfer of request id.
// It fails with ErrLeaseLost when the transfer is no longer owner's or has
// ended.
func (s *Store) RenewTransfer(ctx context.Context, id int64, owner string, lease time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE transfers SET lease_until = now() + $3::interval
		WHERE request_id = $1 AND owner = $2 AND outcome IS NULL`, id, owner, lease)
	if err != nil {
		return fmt.Errorf("store: renew transfer %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// TransferOf returns request id's transfer, or ErrNoTransfer.
func (s *Store) TransferOf(ctx context.Context, id int64) (Transfer, error) {
	t, err := scanTransfer(s.pool.QueryRow(ctx, `SELECT `+transferColumns+` FROM transfers WHERE request_id = $1`, id))
	if err != nil && !errors.Is(err, ErrNoTransfer) {
		return Transfer{}, fmt.Errorf("store: transfer %d: %w", id, err)
	}
	return t, err
}

// RequestTransferStop asks the owner of request id's open transfer to stop
// it (TransferChannel) and returns the transfer as it was.
func (s *Store) RequestTransferStop(ctx context.Context, id int64) (Transfer, error) {
	var t Transfer
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		t, err = scanTransfer(tx.QueryRow(ctx, `UPDATE transfers SET stop_requested = true WHERE request_id = $1
			RETURNING `+transferColumns, id))
		if err != nil {
			return err
		}
		if t.Live {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, TransferChannel, strconv.FormatInt(id, 10)); err != nil {
				return fmt.Errorf("store: stop transfer %d: %w", id, err)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNoTransfer) {
		return Transfer{}, fmt.Errorf("store: stop transfer %d: %w", id, err)
	}
	return t, err
}

// FinishTransfer records the outcome of owner's transfer of request id
// ("ok", or "failed" with msg for a person). A transfer that is no longer
// owner's is left alone.
func (s *Store) FinishTransfer(ctx context.Context, id int64, owner, outcome, msg string) error {
	var m *string
	if msg != "" {
		m = &msg
	}
	if _, err := s.pool.Exec(ctx, `UPDATE transfers SET outcome = $3, error = $4 WHERE request_id = $1 AND owner = $2`,
		id, owner, outcome, m); err != nil {
		return fmt.Errorf("store: finish transfer %d: %w", id, err)
	}
	return nil
}

// ListenTransferStops calls stop with the request id of every transfer
// stop asked of any process (RequestTransferStop) until ctx ends;
// connection errors are retried.
func (s *Store) ListenTransferStops(ctx context.Context, stop func(id int64)) error {
	return s.listen(ctx, TransferChannel, func(payload string) {
		if id, err := strconv.ParseInt(payload, 10, 64); err == nil {
			stop(id)
		}
	})
}
