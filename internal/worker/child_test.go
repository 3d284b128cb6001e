package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/worker"
)

// childMain is a worker process for the multi-process tests.
func childMain() int {
	childLogger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("CHILD_DB_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	st := store.New(pool, nil)
	owner := os.Getenv("CHILD_OWNER")
	var runner worker.Runner
	cfg := worker.Config{Slots: 2, PollEvery: 50 * time.Millisecond, Owner: owner, SoftStop: 5 * time.Second}
	switch os.Getenv("UPGRADE_TEST_CHILD") {
	case "recording":
		runner = recordingRunner{url: os.Getenv("CHILD_DB_URL"), owner: owner, delay: 20 * time.Millisecond}
	case "engine":
		fs, err := files.Open(ctx, childLogger, files.Config{Local: os.Getenv("CHILD_DATA")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		eng, err := engine.New(childLogger, engine.Config{Kind: engine.Builtin, DatabaseURL: os.Getenv("CHILD_ADMIN_URL"),
			Files: fs, WorkDir: filepath.Join(os.Getenv("CHILD_DATA"), "work"), DataRoot: os.Getenv("CHILD_DATA"),
			Targets: []string{"12.0", "16.0"}, Namespace: os.Getenv("CHILD_NS")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		runner = eng
		cfg.Slots, cfg.Lease = 1, 2*time.Second
	}
	if err := worker.New(childLogger, st, runner, cfg).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
