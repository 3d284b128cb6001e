package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/golang-migrate/migrate/v4"
	pgx5 "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Store is the PostgreSQL-backed record of upgrade requests.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

// New returns a Store using pool; logger (nil: none) hears of what the
// store retries on its own, such as a lost LISTEN connection.
func New(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, logger: logger.With("component", "store")}
}

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
// databaseURL, in any form pgx reads (postgres://… URL or libpq's
// key=value). Nothing to apply is not an error. Its errors never hold the
// password (pgx redacts its parse errors; connection errors name user,
// host and database only).
func Migrate(ctx context.Context, databaseURL string, fsys fs.FS) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return fmt.Errorf("store: migrate: open migrations: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	// The name as a postgres:// URL gave it before (its path), so the
	// advisory lock that serializes concurrent migrations stays the same.
	drv, err := pgx5.WithInstance(db, &pgx5.Config{DatabaseName: "/" + cfg.Database})
	if err != nil {
		db.Close()
		src.Close()
		return fmt.Errorf("store: migrate: connect: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		drv.Close()
		src.Close()
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer m.Close() // closes the source, the driver and db
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
