package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SFTPKey is one public key allowed to log in as a request's SFTP user.
type SFTPKey struct {
	Fingerprint string // SHA256:… as ssh-keygen -l prints it
	PublicKey   string // one authorized_keys line without options or comment
	Comment     string
}

// GrantSFTP replaces the SFTP keys of a request in one of the states in
// allowed, valid for ttl from now, and returns the request. It fails with
// ErrNotFound or a *StateError.
func (s *Store) GrantSFTP(ctx context.Context, id int64, keys []SFTPKey, ttl time.Duration, allowed ...State) (Request, error) {
	var out Request
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := lockRequest(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := needState(r, allowed...); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM sftp_keys WHERE request_id = $1`, id); err != nil {
			return fmt.Errorf("store: grant sftp %d: %w", id, err)
		}
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO sftp_keys (request_id, fingerprint, public_key, comment)
				VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, id, k.Fingerprint, k.PublicKey, k.Comment); err != nil {
				return fmt.Errorf("store: grant sftp %d: %w", id, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE requests SET sftp_granted_at = now(),
			sftp_expires_at = now() + $2::interval WHERE id = $1`, id, ttl); err != nil {
			return fmt.Errorf("store: grant sftp %d: %w", id, err)
		}
		if err := addEvent(ctx, tx, id, "info", fmt.Sprintf("SFTP access granted to %d key(s).", len(keys))); err != nil {
			return err
		}
		out, err = getRequest(ctx, tx, id)
		return err
	})
	return out, err
}

// SFTPKeys returns the keys granted to a request (none when never granted).
func (s *Store) SFTPKeys(ctx context.Context, id int64) ([]SFTPKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT fingerprint, public_key, comment FROM sftp_keys
		WHERE request_id = $1 ORDER BY fingerprint`, id)
	if err != nil {
		return nil, fmt.Errorf("store: sftp keys %d: %w", id, err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SFTPKey, error) {
		var k SFTPKey
		err := row.Scan(&k.Fingerprint, &k.PublicKey, &k.Comment)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: sftp keys %d: %w", id, err)
	}
	return keys, nil
}
