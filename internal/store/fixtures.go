package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Fixture is one request as exported: its row, its SFTP keys and its log,
// as JSON objects of the tables' columns.
type Fixture struct {
	Request json.RawMessage   `json:"request"`
	Keys    []json.RawMessage `json:"sftp_keys"`
	Events  []json.RawMessage `json:"events"`
}

// ExportFixtures returns every request with its keys and log.
func (s *Store) ExportFixtures(ctx context.Context) ([]Fixture, error) {
	rows, err := s.pool.Query(ctx, `SELECT row_to_json(r)::text,
		COALESCE((SELECT json_agg(k) FROM sftp_keys k WHERE k.request_id = r.id), '[]')::text,
		COALESCE((SELECT json_agg(json_build_object('at', e.at, 'level', e.level, 'message', e.message) ORDER BY e.id)
			FROM request_events e WHERE e.request_id = r.id), '[]')::text
		FROM requests r ORDER BY r.id`)
	if err != nil {
		return nil, fmt.Errorf("store: export: %w", err)
	}
	defer rows.Close()
	var out []Fixture
	for rows.Next() {
		var req, keys, events string
		if err := rows.Scan(&req, &keys, &events); err != nil {
			return nil, fmt.Errorf("store: export: %w", err)
		}
		f := Fixture{Request: json.RawMessage(req)}
		if err := json.Unmarshal([]byte(keys), &f.Keys); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(events), &f.Events); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// ImportFixtures recreates exported requests with their ids and keys, in
// one transaction; replace removes every request first. Leases are
// dropped, so nothing imported looks in progress. The transaction also
// records the import under nonce with the ids it removed (CommittedImport),
// so files staged for it can be put in place after a crash. It returns the
// ids imported and removed. It fails, changing nothing, when an id exists
// (without replace) or a fixture is malformed.
func (s *Store) ImportFixtures(ctx context.Context, fixtures []Fixture, replace bool, nonce string) (imported, removed []int64, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		imported, removed = nil, nil
		if replace {
			rows, err := tx.Query(ctx, `DELETE FROM requests RETURNING id`)
			if err != nil {
				return fmt.Errorf("store: import: %w", err)
			}
			if removed, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return fmt.Errorf("store: import: %w", err)
			}
		}
		for i, f := range fixtures {
			var id int64
			err := tx.QueryRow(ctx, `INSERT INTO requests SELECT * FROM json_populate_record(NULL::requests, $1::json)
				RETURNING id`, string(f.Request)).Scan(&id)
			if err != nil {
				return fmt.Errorf("store: import fixture %d: %w", i+1, err)
			}
			// An export of a release without upload names kept the upload
			// as "upload".
			if _, err := tx.Exec(ctx, `UPDATE requests SET upload_token = NULL, upload_lease_until = NULL,
				lease_owner = NULL, lease_until = NULL, scratch_db = NULL,
				upload_name = CASE WHEN upload_name IS NULL AND upload_completed_at IS NOT NULL THEN 'upload' ELSE upload_name END,
				state = CASE WHEN state = 'processing' THEN 'queued' ELSE state END WHERE id = $1`, id); err != nil {
				return fmt.Errorf("store: import fixture %d: %w", i+1, err)
			}
			for _, k := range f.Keys {
				if _, err := tx.Exec(ctx, `INSERT INTO sftp_keys SELECT * FROM json_populate_record(NULL::sftp_keys, $1::json)`, string(k)); err != nil {
					return fmt.Errorf("store: import fixture %d keys: %w", i+1, err)
				}
			}
			for _, e := range f.Events {
				if _, err := tx.Exec(ctx, `INSERT INTO request_events (request_id, at, level, message)
					SELECT $1, at, level, message FROM json_to_record($2::json) AS x(at timestamptz, level text, message text)`, id, string(e)); err != nil {
					return fmt.Errorf("store: import fixture %d log: %w", i+1, err)
				}
			}
			imported = append(imported, id)
		}
		// The files of a request imported again are replaced, not removed.
		gone := []int64{}
		for _, id := range removed {
			if !slices.Contains(imported, id) {
				gone = append(gone, id)
			}
		}
		removed = gone
		if err := markDeleted(ctx, tx, removed); err != nil {
			return err
		}
		// An id imported again is no longer a deleted one.
		if _, err := tx.Exec(ctx, `DELETE FROM deleted_requests WHERE id = ANY($1)`, imported); err != nil {
			return fmt.Errorf("store: import: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('requests', 'id'), GREATEST((SELECT max(id) FROM requests), 1))`); err != nil {
			return fmt.Errorf("store: import: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO imports (nonce, imported, removed) VALUES ($1, $2, $3)`, nonce, imported, removed); err != nil {
			return fmt.Errorf("store: import: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return imported, removed, nil
}

// CommittedImport says whether the import nonce committed, and which
// request ids it imported and removed.
func (s *Store) CommittedImport(ctx context.Context, nonce string) (imported, removed []int64, committed bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT imported, removed FROM imports WHERE nonce = $1`, nonce).Scan(&imported, &removed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("store: import %s: %w", nonce, err)
	}
	return imported, removed, true, nil
}

// ForgetImport drops the record of import nonce once its files are in
// place.
func (s *Store) ForgetImport(ctx context.Context, nonce string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM imports WHERE nonce = $1`, nonce); err != nil {
		return fmt.Errorf("store: forget import %s: %w", nonce, err)
	}
	return nil
}
