package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"io/fs"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// migrate driver
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is the PostgreSQL-backed record of upgrade requests.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store using pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction that is rolled back unless fn returns nil and
// the commit succeeds.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// Migrate applies every pending migration in fsys to the database at
// databaseURL (a postgres:// URL). Nothing to apply is not an error.
func Migrate(ctx context.Context, databaseURL string, fsys fs.FS) error {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return fmt.Errorf("store: migrate: parse database URL: %w", err)
	}
	u.Scheme = "pgx5"
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return fmt.Errorf("store: migrate: open migrations: %w", err)
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, u.String())
	if err != nil {
		src.Close()
		return fmt.Errorf("store: migrate: connect: %w", err)
	}
	defer m.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			m.GracefulStop <- true
		case <-done:
		}
	}()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}
