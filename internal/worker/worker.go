// Package worker claims queued requests and runs them to done or failed:
// UPGRADE_WORKERS slots, woken by LISTEN/NOTIFY with polling as the
// fallback, each job under a lease renewed by a heartbeat, so a request
// whose worker dies is taken up again by any process.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/metrics"
	"github.com/upgrade-server/upgrade-server/internal/scenario"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// Store is what the worker needs from the store; *store.Store satisfies it.
type Store interface {
	ClaimNext(ctx context.Context, owner string, lease time.Duration) (store.Job, bool, error)
	Heartbeat(ctx context.Context, id int64, owner string, lease time.Duration) error
	Finish(ctx context.Context, id int64, owner string, o store.Outcome) error
	SetInspection(ctx context.Context, id int64, owner string, in store.Inspection) error
	SetScratchDB(ctx context.Context, id int64, owner, name string) error
	SetEstimate(ctx context.Context, id int64, seconds int32) error
	ProcessingStats(ctx context.Context) (float64, error)
	LiveScratchDBs(ctx context.Context) (map[string]bool, error)
	AddEvent(ctx context.Context, id int64, level, message string) error
	ListenQueue(ctx context.Context, notify func()) error
	Request(ctx context.Context, id int64) (store.Request, error)
}

// Runner runs one job; *engine.Engine satisfies it.
type Runner interface {
	Run(ctx context.Context, job engine.Job, hooks engine.Hooks) (engine.Result, error)
	DropStaleScratchDBs(ctx context.Context, live map[string]bool) (int, error)
	DropScratchDB(ctx context.Context, name string) error
	RunMock(ctx context.Context, job engine.Job, hooks engine.Hooks, duration time.Duration) (engine.Result, error)
}

// Config configures the worker. Zero values get the defaults.
type Config struct {
	Slots       int           // concurrent jobs (default 2)
	Lease       time.Duration // lease between heartbeats (default 30s)
	PollEvery   time.Duration // polling when no notification comes (default 5s)
	SoftStop    time.Duration // shutdown waits this long for running jobs (default 1m)
	MaxAttempts int           // a request that keeps killing workers fails after this many (default 3)
	Owner       string        // lease owner name (default host-pid-random)
	// MockDuration is how long scenario runs last without duration= (and
	// the estimate of passthrough runs when FixedEstimate is set).
	MockDuration time.Duration
	// FixedEstimate makes estimated_time MockDuration for every request
	// (the passthrough engine).
	FixedEstimate bool
	// Metrics records processing durations (nil: none).
	Metrics *metrics.Metrics
	// JobDoneFunc, when set, is called after each job (tests wait on it).
	JobDoneFunc func(id int64)
}

// Worker runs jobs.
type Worker struct {
	logger *slog.Logger
	store  Store
	runner Runner
	cfg    Config
	wake   chan struct{}
}

// New returns a worker; Run runs it.
func New(logger *slog.Logger, st Store, runner Runner, cfg Config) *Worker {
	if cfg.Slots <= 0 {
		cfg.Slots = 2
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = 5 * time.Second
	}
	if cfg.SoftStop == 0 {
		cfg.SoftStop = time.Minute
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), token.Hex(4))
	}
	return &Worker{logger: logger.With("component", "worker"), store: st, runner: runner, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Run claims and runs jobs until ctx ends, then stops claiming, lets
// running jobs finish up to SoftStop, cancels the rest (their leases
// expire and another process takes them up) and returns.
func (w *Worker) Run(ctx context.Context) error {
	w.sweep(ctx)
	listenCtx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	go w.store.ListenQueue(listenCtx, w.notify)

	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	var wg sync.WaitGroup
	for range w.cfg.Slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.slot(ctx, jobCtx)
		}()
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.SoftStop):
		w.logger.Warn("soft stop timed out; cancelling running jobs, which other processes will take up", "timeout", w.cfg.SoftStop)
		cancelJobs()
		<-done
	}
	return nil
}

func (w *Worker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Worker) slot(ctx, jobCtx context.Context) {
	t := time.NewTicker(w.cfg.PollEvery)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			job, ok, err := w.store.ClaimNext(ctx, w.cfg.Owner, w.cfg.Lease)
			if err != nil {
				if ctx.Err() == nil {
					w.logger.Error("claim", "err", err)
				}
				break
			}
			if !ok {
				break
			}
			w.notify() // another slot may find more work
			w.process(jobCtx, job)
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// sweep drops scratch databases left by crashed attempts.
func (w *Worker) sweep(ctx context.Context) {
	live, err := w.store.LiveScratchDBs(ctx)
	if err != nil {
		w.logger.Warn("scratch database sweep", "err", err)
		return
	}
	n, err := w.runner.DropStaleScratchDBs(ctx, live)
	if err != nil {
		w.logger.Warn("scratch database sweep", "err", err)
	}
	if n > 0 {
		w.logger.Info("dropped scratch databases left by a crash", "count", n)
	}
}

func (w *Worker) process(ctx context.Context, job store.Job) {
	logger := w.logger.With("request_id", job.ID, "attempt", job.Attempts)
	defer func() {
		if w.cfg.JobDoneFunc != nil {
			w.cfg.JobDoneFunc(job.ID)
		}
	}()
	claimed := time.Now()
	finish := func(o store.Outcome) {
		w.cfg.Metrics.Processed(string(o.State), time.Since(claimed))
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second) // bounded final write
		defer cancel()
		if err := w.store.Finish(fctx, job.ID, w.cfg.Owner, o); err != nil {
			logger.Error("finish", "err", err)
		}
	}
	if job.Attempts > w.cfg.MaxAttempts {
		logger.Error("request keeps interrupting its workers; failing it")
		finish(store.Outcome{State: store.StateFailed, CustomerMessage: fmt.Sprintf(
			"Processing was interrupted %d times (the worker stopped or the machine was lost each time); the dump may be too large for this server. Contact the operator.",
			job.Attempts-1)})
		return
	}
	if job.ScratchDB != nil {
		// Left by the attempt that died: drop it before starting again.
		if err := w.runner.DropScratchDB(ctx, *job.ScratchDB); err != nil {
			logger.Warn("drop the earlier attempt's scratch database", "db", *job.ScratchDB, "err", err)
		} else {
			logger.Info("dropped the earlier attempt's scratch database", "db", *job.ScratchDB)
		}
	}
	if job.Attempts > 1 {
		w.event(ctx, job.ID, "warning", fmt.Sprintf("Attempt %d: taking over from a worker that stopped.", job.Attempts))
	}
	var sc *scenario.Scenario
	if job.Scenario != nil {
		parsed, err := scenario.Parse(*job.Scenario)
		if err != nil {
			finish(store.Outcome{State: store.StateFailed, CustomerMessage: "Invalid scenario: " + err.Error()})
			return
		}
		sc = &parsed
	}
	mockDuration := w.cfg.MockDuration
	if sc != nil && sc.Duration != nil {
		mockDuration = *sc.Duration
	}
	w.estimate(ctx, job, sc != nil || w.cfg.FixedEstimate, mockDuration)

	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go store.KeepLease(jctx, w.cfg.Lease/3,
		func(ctx context.Context) error { return w.store.Heartbeat(ctx, job.ID, w.cfg.Owner, w.cfg.Lease) },
		func(err error) { cancel(err) },
		func(err error) { logger.Warn("heartbeat", "err", err) })

	logger.Info("processing", "scenario", job.Scenario != nil)
	env, dropped := input.AllowedEnvVars(job.EnvVars)
	if dropped != nil {
		w.event(jctx, job.ID, "warning", "These env_vars are not passed on: this server no longer accepts them: "+strings.Join(dropped, ", ")+".")
	}
	ejob := engine.Job{ID: job.ID, Attempt: job.Attempts, Target: job.Target, Aim: job.Aim, Filename: job.Filename,
		Output: engine.Output(job.Output), EnvVars: env}
	if job.UploadName != nil {
		ejob.Upload = files.Name(*job.UploadName)
	}
	hooks := engine.Hooks{
		Log: func(level, msg string) { w.event(jctx, job.ID, level, msg) },
		Inspected: func(info dump.Info) error {
			return w.store.SetInspection(jctx, job.ID, w.cfg.Owner, store.Inspection{Compressions: info.Compressions,
				PostgreSQL: info.PostgreSQL, DatabaseVersion: info.DatabaseVersion, DatabaseUUID: info.DatabaseUUID, Filestore: info.Filestore})
		},
		ScratchDB: func(name string) error {
			return w.store.SetScratchDB(context.WithoutCancel(jctx), job.ID, w.cfg.Owner, name)
		},
	}
	var res engine.Result
	var err error
	if sc != nil {
		err = w.holdForPolls(jctx, job)
		if err == nil {
			res, err = w.runner.RunMock(jctx, ejob, hooks, mockDuration)
		}
	} else {
		res, err = w.runner.Run(jctx, ejob, hooks)
	}
	var ce *engine.CustomerError
	switch {
	case err == nil && sc != nil && sc.Fail:
		finish(store.Outcome{State: store.StateFailed, CustomerMessage: sc.FailMessage})
	case err == nil && sc != nil && sc.Cancel:
		finish(store.Outcome{State: store.StateCancelled, CustomerMessage: "The request was cancelled (scenario)."})
	case err == nil && sc != nil && sc.Testing:
		finish(store.Outcome{State: store.StateTesting, UpgradedSize: res.UpgradedSize})
	case err == nil:
		logger.Info("done", "upgraded_bytes", res.UpgradedSize)
		finish(store.Outcome{State: store.StateDone, UpgradedSize: res.UpgradedSize})
	case errors.Is(context.Cause(jctx), store.ErrLeaseLost):
		logger.Warn("lease lost; another worker has the request")
	case ctx.Err() != nil:
		logger.Warn("cancelled by shutdown; the request will be taken up again", "err", err)
	case errors.As(err, &ce):
		logger.Info("failed", "reason", ce.Message)
		finish(store.Outcome{State: store.StateFailed, CustomerMessage: ce.Message})
	default:
		ref := token.Hex(8)
		logger.Error("internal error", "err", err, "reference", ref)
		finish(store.Outcome{State: store.StateFailed,
			CustomerMessage: "An internal error stopped the upgrade (reference " + ref + "); the operator has the details."})
	}
}

// holdForPolls keeps a scenario request processing until it has been
// polled HoldPolls more times (it was held pending for the first ones).
func (w *Worker) holdForPolls(ctx context.Context, job store.Job) error {
	for job.HoldPolls > 0 {
		r, err := w.store.Request(ctx, job.ID)
		if err != nil {
			return err
		}
		if r.StatusPolls >= 2*r.HoldPolls {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (w *Worker) event(ctx context.Context, id int64, level, msg string) {
	if err := w.store.AddEvent(context.WithoutCancel(ctx), id, level, msg); err != nil {
		w.logger.Warn("request log", "request_id", id, "err", err)
	}
}

// estimate sets estimated_time: the fixed duration of mock runs, else from
// past runs (seconds per GiB), or a minute per GiB plus half a minute.
func (w *Worker) estimate(ctx context.Context, job store.Job, fixed bool, d time.Duration) {
	if fixed {
		if err := w.store.SetEstimate(ctx, job.ID, int32(d/time.Second)); err != nil {
			w.logger.Warn("estimate", "request_id", job.ID, "err", err)
		}
		return
	}
	size := int64(0)
	if job.UploadSize != nil {
		size = *job.UploadSize
	}
	perGiB, err := w.store.ProcessingStats(ctx)
	if err != nil || perGiB <= 0 {
		perGiB = 60
	}
	secs := 30 + perGiB*float64(size)/(1<<30)
	if err := w.store.SetEstimate(ctx, job.ID, int32(min(secs, 1<<30))); err != nil {
		w.logger.Warn("estimate", "request_id", job.ID, "err", err)
	}
}
