package store

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// State is a stored request state. Each API renders it in its own vocabulary.
type State string

// The stored states: one lifecycle, whatever API a request came through.
const (
	StateDraft      State = "draft"      // created, waiting for (or receiving) the dump
	StateQueued     State = "queued"     // process accepted, waiting for a worker
	StateProcessing State = "processing" // a worker holds the lease
	StateTesting    State = "testing"    // held for manual testing, released by skip_test
	StateDone       State = "done"       // upgraded artifacts available
	StateDelivered  State = "delivered"  // released by skip_test
	StateFailed     State = "failed"     // stopped with a reason for the customer
	StateCancelled  State = "cancelled"  // stopped by an operator
)

// V1 is the state in the v1 API's vocabulary, which its record, its
// failures and the status page show: queued is "pending", failed is
// "invalid", every other state keeps its name.
func (s State) V1() string {
	switch s {
	case StateQueued:
		return "pending"
	case StateFailed:
		return "invalid"
	}
	return string(s)
}

// Sentinel errors. Match them with errors.Is.
var (
	// ErrNotFound: no request has that id.
	ErrNotFound = errors.New("store: request not found")
	// ErrBadTransition: the request is not in a state the operation needs;
	// the error is a *StateError that names both.
	ErrBadTransition = errors.New("store: operation not allowed in this state")
	// ErrUploadBusy: another upload (HTTP or SFTP) holds the request's upload lease.
	ErrUploadBusy = errors.New("store: an upload is in progress")
	// ErrNoUpload: process was asked for a request without a complete upload.
	ErrNoUpload = errors.New("store: no complete upload")
	// ErrLeaseLost: the upload lease was taken over or the request moved on.
	ErrLeaseLost = errors.New("store: upload lease lost")
)

// StateError says which state a request is in and which states an operation
// needs. It matches ErrBadTransition.
type StateError struct {
	Current State
	Want    []State
}

func (e *StateError) Error() string {
	want := make([]string, len(e.Want))
	for i, s := range e.Want {
		want[i] = string(s)
	}
	return fmt.Sprintf("store: request is %s, needs %s", e.Current, strings.Join(want, " or "))
}

// Is makes errors.Is(err, ErrBadTransition) true.
func (e *StateError) Is(target error) bool { return target == ErrBadTransition }

// Request is one upgrade request as stored.
type Request struct {
	ID        int64
	Key       string
	Contract  string
	Email     string
	Target    string
	Aim       string
	Filename  string
	Timezone  *string
	State     State
	Issue     int64
	CreatedAt time.Time

	StateChangedAt time.Time

	UploadSize        *int64
	UploadSHA256      *string
	UploadCompletedAt *time.Time
	// UploadName is the file (files.Name) of the last complete upload, nil
	// before the first.
	UploadName *string
	// Uploading is true while an unexpired upload lease is held.
	Uploading bool

	QueuedAt         *time.Time
	ProcessedAt      *time.Time
	FinishedAt       *time.Time
	EstimatedSeconds *int32
	DatabaseUUID     *string
	DatabaseVersion  *string
	PostgreSQL       *string
	Compressions     []string
	Filestore        bool
	CustomerMessage  *string

	SFTPGrantedAt *time.Time
	SFTPExpiresAt *time.Time

	// Scenario is the request's scenario contract (internal/scenario), if any.
	Scenario    *string
	HoldPolls   int
	StatusPolls int

	// Fields of requests made by Odoo's own client (internal/rpcapi).
	// EnvVars are its NAME=VALUE environment for the command engine;
	// SSHKey the public key its rsync transfers log in with; Output how
	// the upgraded dump is written (OutputDirectory for that client);
	// ClientArchive the archive version its pg_dump writes ("" unknown).
	EnvVars       []string
	SSHKey        *string
	Output        string
	ClientArchive *string
}

// OutputDirectory writes the upgraded dump as a directory-format dump
// (Request.Output); "" writes it in the upload's own format.
const OutputDirectory = "directory"

// NewRequest holds what create needs; the key is chosen by the caller.
type NewRequest struct {
	Key      string
	Contract string
	Email    string
	Target   string
	Aim      string
	Filename string
	Timezone *string
	// Scenario and HoldPolls describe a scenario request.
	Scenario  *string
	HoldPolls int
	// TokenHash (the hex sha256 of the token), EnvVars, SSHKey and Output
	// describe a request of Odoo's own client.
	TokenHash *string
	EnvVars   []string
	SSHKey    *string
	Output    string
}

const requestColumns = `id, key, contract, email, target, aim, filename, timezone, state, issue,
	created_at, state_changed_at, upload_size, upload_sha256, upload_completed_at,
	(upload_token IS NOT NULL AND upload_lease_until > now()),
	queued_at, processed_at, finished_at, estimated_seconds, database_uuid, database_version,
	postgresql, compressions, filestore, customer_message, sftp_granted_at, sftp_expires_at,
	scenario, hold_polls, status_polls, upload_name, env_vars, ssh_key, output, client_archive`

func scanRequest(row pgx.Row) (Request, error) {
	var r Request
	err := row.Scan(&r.ID, &r.Key, &r.Contract, &r.Email, &r.Target, &r.Aim, &r.Filename,
		&r.Timezone, &r.State, &r.Issue, &r.CreatedAt, &r.StateChangedAt, &r.UploadSize,
		&r.UploadSHA256, &r.UploadCompletedAt, &r.Uploading, &r.QueuedAt, &r.ProcessedAt,
		&r.FinishedAt, &r.EstimatedSeconds, &r.DatabaseUUID, &r.DatabaseVersion, &r.PostgreSQL,
		&r.Compressions, &r.Filestore, &r.CustomerMessage, &r.SFTPGrantedAt, &r.SFTPExpiresAt,
		&r.Scenario, &r.HoldPolls, &r.StatusPolls, &r.UploadName, &r.EnvVars, &r.SSHKey, &r.Output, &r.ClientArchive)
	if errors.Is(err, pgx.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	return r, err
}

// CreateRequest stores a new draft request and returns it.
func (s *Store) CreateRequest(ctx context.Context, n NewRequest) (Request, error) {
	r, err := scanRequest(s.pool.QueryRow(ctx, `
		INSERT INTO requests (key, contract, email, target, aim, filename, timezone, scenario, hold_polls,
			token_hash, env_vars, ssh_key, output)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE($11::text[], '{}'), $12, $13)
		RETURNING `+requestColumns,
		n.Key, n.Contract, n.Email, n.Target, n.Aim, n.Filename, n.Timezone, n.Scenario, n.HoldPolls,
		n.TokenHash, n.EnvVars, n.SSHKey, n.Output))
	if err != nil {
		return Request{}, fmt.Errorf("store: create request: %w", err)
	}
	return r, nil
}

// Request returns the request with that id, or ErrNotFound.
func (s *Store) Request(ctx context.Context, id int64) (Request, error) {
	return getRequest(ctx, s.pool, id)
}

// lockRequest reads a request and locks its row for the rest of tx.
func lockRequest(ctx context.Context, tx pgx.Tx, id int64) (Request, error) {
	r, err := scanRequest(tx.QueryRow(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1 FOR UPDATE`, id))
	if err != nil {
		return Request{}, fmt.Errorf("store: lock request %d: %w", id, err)
	}
	return r, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getRequest(ctx context.Context, tx querier, id int64) (Request, error) {
	r, err := scanRequest(tx.QueryRow(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, id))
	if err != nil {
		return Request{}, fmt.Errorf("store: get request %d: %w", id, err)
	}
	return r, nil
}

func needState(r Request, want ...State) error {
	if slices.Contains(want, r.State) {
		return nil
	}
	return &StateError{Current: r.State, Want: want}
}

// BeginUpload takes the upload lease of a draft request for token until
// lease from now, if no other writer holds it. It fails with ErrNotFound, a
// *StateError (not draft) or ErrUploadBusy (another upload holds an
// unexpired lease). Uploads themselves use TakeUpload.
func (s *Store) BeginUpload(ctx context.Context, id int64, token string, lease time.Duration) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := lockRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := needState(r, StateDraft); err != nil {
			return err
		}
		if r.Uploading {
			return ErrUploadBusy
		}
		return setUploadLease(ctx, tx, id, token, lease, false)
	})
}

// UploadChannel is the LISTEN/NOTIFY channel on which TakeUpload tells the
// process holding an upload that a newer writer took it over. The payload
// is "<request id> <token of the writer replaced>" (ListenUploads).
const UploadChannel = "upgrade_upload_takeover"

// TakeUpload takes the upload lease of a draft request for token until
// lease from now, whoever holds it: the newest authenticated writer wins
// (a resume after a network drop must not wait for the dead writer's lease
// to expire). It returns the token it replaced ("" when none), whose
// holder is told to stop through UploadChannel when the transaction
// commits. inPlace is for a writer that changes the stored upload in place
// (SFTP): the earlier upload stops counting as complete until that writer
// records the new one. It fails with ErrNotFound or a *StateError (not
// draft).
func (s *Store) TakeUpload(ctx context.Context, id int64, token string, lease time.Duration, inPlace bool) (string, error) {
	var replaced string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var old *string
		err := tx.QueryRow(ctx, `SELECT upload_token FROM requests WHERE id = $1 FOR UPDATE`, id).Scan(&old)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store: take upload %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: take upload %d: %w", id, err)
		}
		r, err := getRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := needState(r, StateDraft); err != nil {
			return err
		}
		if err := setUploadLease(ctx, tx, id, token, lease, inPlace); err != nil {
			return err
		}
		if old != nil && *old != token {
			replaced = *old
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, UploadChannel, fmt.Sprintf("%d %s", id, replaced)); err != nil {
				return fmt.Errorf("store: take upload %d: notify: %w", id, err)
			}
		}
		return nil
	})
	return replaced, err
}

func setUploadLease(ctx context.Context, tx pgx.Tx, id int64, token string, lease time.Duration, inPlace bool) error {
	_, err := tx.Exec(ctx, `UPDATE requests SET upload_token = $2, upload_lease_until = now() + $3::interval,
		upload_size = CASE WHEN $4 THEN NULL ELSE upload_size END,
		upload_sha256 = CASE WHEN $4 THEN NULL ELSE upload_sha256 END,
		upload_completed_at = CASE WHEN $4 THEN NULL ELSE upload_completed_at END
		WHERE id = $1`, id, token, lease, inPlace)
	if err != nil {
		return fmt.Errorf("store: upload lease %d: %w", id, err)
	}
	return nil
}

// RenewUpload extends the upload lease held by token. It fails with
// ErrLeaseLost when token no longer holds it.
func (s *Store) RenewUpload(ctx context.Context, id int64, token string, lease time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE requests SET upload_lease_until = now() + $3::interval
		WHERE id = $1 AND upload_token = $2 AND state = 'draft'`, id, token, lease)
	if err != nil {
		return fmt.Errorf("store: renew upload %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// CompleteUpload records a finished upload, stored as u.Name, and releases
// the lease held by token. It returns the request and the file of the
// upload it replaced ("" when none, or the same), which the caller removes.
// It fails with ErrLeaseLost when token no longer holds the lease of a
// draft request (the caller then removes u.Name).
func (s *Store) CompleteUpload(ctx context.Context, id int64, token string, u Upload) (Request, string, error) {
	var out Request
	var replaced *string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT upload_name FROM requests WHERE id = $1 AND upload_token = $2 AND state = 'draft' FOR UPDATE`,
			id, token).Scan(&replaced)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrLeaseLost
		}
		if err != nil {
			return fmt.Errorf("store: complete upload %d: %w", id, err)
		}
		out, err = scanRequest(tx.QueryRow(ctx, `
			UPDATE requests SET upload_size = $2, upload_sha256 = $3, upload_name = $4, upload_completed_at = now(),
				upload_token = NULL, upload_lease_until = NULL
			WHERE id = $1
			RETURNING `+requestColumns, id, u.Size, u.SHA256, u.Name))
		if err != nil {
			return fmt.Errorf("store: complete upload %d: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return Request{}, "", err
	}
	if replaced != nil && *replaced != u.Name {
		return out, *replaced, nil
	}
	return out, "", nil
}

// Upload is a complete upload: its file and what it holds.
type Upload struct {
	Name   string // the file (files.Name) it was stored as
	Size   int64
	SHA256 string // hex
}

// AbortUpload releases the lease held by token, leaving any earlier
// complete upload as it was. Releasing a lease already lost is not an error.
func (s *Store) AbortUpload(ctx context.Context, id int64, token string) error {
	_, err := s.pool.Exec(ctx, `UPDATE requests SET upload_token = NULL, upload_lease_until = NULL
		WHERE id = $1 AND upload_token = $2`, id, token)
	if err != nil {
		return fmt.Errorf("store: abort upload %d: %w", id, err)
	}
	return nil
}

// Process queues a draft request that has a complete upload and no running
// upload. A request already queued or processing is returned unchanged (it is
// never queued twice). It fails with ErrNotFound, ErrNoUpload, ErrUploadBusy
// or a *StateError.
func (s *Store) Process(ctx context.Context, id int64) (Request, error) {
	var out Request
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := lockRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		switch {
		case r.State == StateQueued || r.State == StateProcessing:
			out = r
			return nil
		case r.State != StateDraft:
			return &StateError{Current: r.State, Want: []State{StateDraft}}
		case r.Uploading:
			return ErrUploadBusy
		case r.UploadCompletedAt == nil:
			return ErrNoUpload
		}
		if _, err := tx.Exec(ctx, `UPDATE requests SET state = 'queued', queued_at = now(),
			state_changed_at = now() WHERE id = $1 AND state = 'draft'`, id); err != nil {
			return fmt.Errorf("store: queue request %d: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, QueueChannel, fmt.Sprint(id)); err != nil {
			return fmt.Errorf("store: notify %d: %w", id, err)
		}
		if err := addEvent(ctx, tx, id, "info", "Queued for processing."); err != nil {
			return err
		}
		out, err = getRequest(ctx, tx, id)
		return err
	})
	return out, err
}

// Transition moves a request from one of the states in from to state to,
// and logs message in its request log. It fails with ErrNotFound or a
// *StateError.
func (s *Store) Transition(ctx context.Context, id int64, to State, message string, from ...State) (Request, error) {
	var out Request
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := lockRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := needState(r, from...); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE requests SET state = $2, state_changed_at = now() WHERE id = $1`, id, to); err != nil {
			return fmt.Errorf("store: move request %d to %s: %w", id, to, err)
		}
		if message != "" {
			if err := addEvent(ctx, tx, id, "info", message); err != nil {
				return err
			}
		}
		out, err = getRequest(ctx, tx, id)
		return err
	})
	return out, err
}

// CountStatusPoll counts a status call on a scenario request (scenario
// polls=N holds the request for N calls in each state).
func (s *Store) CountStatusPoll(ctx context.Context, id int64) error {
	// The call that releases a held request wakes the workers.
	_, err := s.pool.Exec(ctx, `WITH u AS (
			UPDATE requests SET status_polls = status_polls + 1 WHERE id = $1 AND scenario IS NOT NULL
			RETURNING state, status_polls, hold_polls)
		SELECT pg_notify($2, $1::text) FROM u WHERE state = 'queued' AND status_polls = hold_polls`, id, QueueChannel)
	if err != nil {
		return fmt.Errorf("store: count poll %d: %w", id, err)
	}
	return nil
}

// RequestGetter reads a request by id (*Store, and the narrower interfaces
// of the fronts).
type RequestGetter interface {
	Request(ctx context.Context, id int64) (Request, error)
}

// RequestByKey returns request id when key is its key. An unknown id and a
// wrong key both give ErrNotFound, so that ids cannot be probed, and keys
// are compared in constant time.
func RequestByKey(ctx context.Context, g RequestGetter, id int64, key string) (Request, error) {
	req, err := g.Request(ctx, id)
	if err != nil {
		return Request{}, err
	}
	if subtle.ConstantTimeCompare([]byte(req.Key), []byte(key)) != 1 {
		return Request{}, ErrNotFound
	}
	return req, nil
}
