package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
	"github.com/upgrade-server/upgrade-server/internal/store"
	"github.com/upgrade-server/upgrade-server/internal/worker"
	"github.com/upgrade-server/upgrade-server/migrations"
)

// The test binary doubles as a worker process (see child.go).
func TestMain(m *testing.M) {
	if os.Getenv("UPGRADE_TEST_CHILD") != "" {
		os.Exit(childMain())
	}
	pgtest.Exit(m)
}

// recordingRunner notes each run in a table, so runs from several
// processes can be counted.
type recordingRunner struct {
	url   string
	owner string
	delay time.Duration
}

func (r recordingRunner) Run(ctx context.Context, job engine.Job, hooks engine.Hooks) (engine.Result, error) {
	conn, err := pgx.Connect(ctx, r.url)
	if err != nil {
		return engine.Result{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `INSERT INTO test_runs (request_id, owner) VALUES ($1, $2)`, job.ID, r.owner); err != nil {
		return engine.Result{}, err
	}
	select {
	case <-time.After(r.delay):
	case <-ctx.Done():
		return engine.Result{}, ctx.Err()
	}
	if job.Aim == "production" && job.Filename == "fail.dump" {
		return engine.Result{}, &engine.CustomerError{Message: "the dump is broken"}
	}
	return engine.Result{UpgradedSize: 42}, nil
}

func (recordingRunner) DropStaleScratchDBs(context.Context, map[string]bool) (int, error) {
	return 0, nil
}

func (recordingRunner) DropScratchDB(context.Context, string) error { return nil }

func (r recordingRunner) RunMock(ctx context.Context, job engine.Job, hooks engine.Hooks, d time.Duration) (engine.Result, error) {
	r.delay = d
	return r.Run(ctx, job, hooks)
}

func setup(t *testing.T) (string, *store.Store, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.NewSchema(t)
	ctx := context.Background()
	if err := store.Migrate(ctx, url, migrations.FS); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE test_runs (request_id bigint, owner text, at timestamptz DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	return url, store.New(pool, nil), pool
}

func queue(t *testing.T, st *store.Store, n int, filename, aim string) []int64 {
	t.Helper()
	ctx := context.Background()
	var ids []int64
	for range n {
		r, err := st.CreateRequest(ctx, store.NewRequest{Key: "k", Contract: "c", Email: "a@b.example", Target: "16.0", Aim: aim, Filename: filename})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.BeginUpload(ctx, r.ID, "u", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.CompleteUpload(ctx, r.ID, "u", store.Upload{Name: "upload", Size: 1 << 20, SHA256: "x"}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Process(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestRunsQueuedRequests(t *testing.T) {
	t.Parallel()
	url, st, pool := setup(t)
	done := make(chan int64, 16)
	w := worker.New(logger(), st, recordingRunner{url: url, owner: "w"}, worker.Config{Slots: 2, PollEvery: time.Hour,
		JobDoneFunc: func(id int64) { done <- id }})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- w.Run(ctx) }()
	// Queued after the worker started: LISTEN/NOTIFY wakes it (polling is an hour away).
	ok := queue(t, st, 3, "db.dump", "test")
	bad := queue(t, st, 1, "fail.dump", "production")
	for range 4 {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the worker did not run the queued requests (LISTEN/NOTIFY)")
		}
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	for _, id := range ok {
		r, _ := st.Request(context.Background(), id)
		if r.State != store.StateDone || r.EstimatedSeconds == nil || r.FinishedAt == nil || r.ProcessedAt == nil {
			t.Fatalf("request %d: %+v", id, r)
		}
	}
	r, _ := st.Request(context.Background(), bad[0])
	if r.State != store.StateFailed || r.CustomerMessage == nil || *r.CustomerMessage != "the dump is broken" {
		t.Fatalf("failing request: %+v", r)
	}
	var runs int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM test_runs`).Scan(&runs)
	if runs != 4 {
		t.Fatalf("%d runs for 4 requests", runs)
	}
}

// TestTwoProcessesNeverRunOneRequestTwice starts two worker processes on
// one database and 30 queued requests.
func TestTwoProcessesNeverRunOneRequestTwice(t *testing.T) {
	t.Parallel()
	url, st, pool := setup(t)
	ids := queue(t, st, 30, "db.dump", "test")
	var cmds []*exec.Cmd
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "UPGRADE_TEST_CHILD=recording", "CHILD_DB_URL="+url, fmt.Sprintf("CHILD_OWNER=p%d", i))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var left int
		pool.QueryRow(context.Background(), `SELECT count(*) FROM requests WHERE state <> 'done'`).Scan(&left)
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests not done", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range cmds {
		c.Process.Signal(os.Interrupt)
		c.Wait()
	}
	rows, _ := pool.Query(context.Background(), `SELECT request_id, count(*), string_agg(owner, ',') FROM test_runs GROUP BY request_id`)
	owners := map[string]int{}
	n := 0
	for rows.Next() {
		var id int64
		var c int
		var who string
		rows.Scan(&id, &c, &who)
		if c != 1 {
			t.Errorf("request %d ran %d times (%s)", id, c, who)
		}
		owners[who]++
		n++
	}
	rows.Close()
	if n != len(ids) {
		t.Fatalf("%d of %d requests ran", n, len(ids))
	}
	t.Logf("runs per process: %v", owners)
	if len(owners) != 2 {
		t.Logf("note: one process took every request (%v)", owners)
	}
}

// TestKilledWorkerIsTakenOver kills a worker process with SIGKILL while it
// restores a dump into its scratch database; another worker takes the
// request up once the lease expires, drops the orphaned scratch database,
// and finishes it.
func TestKilledWorkerIsTakenOver(t *testing.T) {
	t.Parallel()
	url, st, pool := setup(t)
	dataDir := t.TempDir()
	fs, err := files.Open(context.Background(), logger(), files.Config{Local: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	ids := queue(t, st, 1, "big.sql", "test")
	id := ids[0]
	writeBigSQL(t, fs, id)

	ns := fmt.Sprintf("w%d", time.Now().UnixNano()%1000000)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "UPGRADE_TEST_CHILD=engine", "CHILD_DB_URL="+url, "CHILD_DATA="+dataDir, "CHILD_OWNER=doomed",
		"CHILD_ADMIN_URL="+pgtest.BaseURL(t), "CHILD_NS="+ns)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scratch := fmt.Sprintf("upgrade_scratch_%s_%d_1", ns, id)
	admin, err := pgx.Connect(context.Background(), pgtest.BaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	deadline := time.Now().Add(60 * time.Second)
	for {
		var restoring bool
		admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'COPY%')`, scratch).Scan(&restoring)
		if restoring {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			r, _ := st.Request(context.Background(), id)
			evs, _ := st.Events(context.Background(), id, 50)
			t.Fatalf("the child never started restoring: %s %v %+v", r.State, r.CustomerMessage, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL, mid-restore
	cmd.Wait()
	r, _ := st.Request(context.Background(), id)
	if r.State != store.StateProcessing {
		t.Fatalf("after the kill: %s", r.State)
	}

	eng, err := engine.New(logger(), engine.Config{Kind: engine.Builtin, DatabaseURL: pgtest.BaseURL(t), Files: fs,
		WorkDir: filepath.Join(dataDir, "work"), DataRoot: dataDir,
		Targets: []string{"12.0", "16.0"}, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	done := make(chan int64, 1)
	w := worker.New(logger(), st, eng, worker.Config{Slots: 1, Lease: 2 * time.Second, PollEvery: 200 * time.Millisecond,
		Owner: "rescuer", JobDoneFunc: func(id int64) { done <- id }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("the request was never taken over")
	}
	r, _ = st.Request(context.Background(), id)
	var attempts int
	pool.QueryRow(context.Background(), `SELECT attempts FROM requests WHERE id = $1`, id).Scan(&attempts)
	if r.State != store.StateDone || attempts != 2 {
		evs, _ := st.Events(context.Background(), id, 50)
		t.Fatalf("after the takeover: state %s attempts %d, customer message %v, log %+v", r.State, attempts, r.CustomerMessage, evs)
	}
	var left int
	admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname = $1`, scratch).Scan(&left)
	if left != 0 {
		t.Fatalf("the killed worker's scratch database %s is still there", scratch)
	}
}

// writeBigSQL writes an Odoo 12-shaped plain dump with enough rows that
// restoring it takes a moment.
func writeBigSQL(t *testing.T, fs *files.Store, id int64) {
	t.Helper()
	f, err := fs.Create(context.Background(), id, files.Upload)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := f.Commit(); err != nil {
			t.Fatal(err)
		}
	}()
	header := []string{
		"--", "-- PostgreSQL database dump", "--", "",
		"-- Dumped from database version 15.4", "-- Dumped by pg_dump version 15.4", "",
		"CREATE TABLE public.ir_module_module (id integer, name character varying, state character varying, latest_version character varying);",
		"CREATE TABLE public.ir_config_parameter (id integer, key character varying, value text);",
		"CREATE TABLE public.res_partner (id integer, name character varying, comment text);", "",
		"COPY public.ir_module_module (id, name, state, latest_version) FROM stdin;",
		"1\tbase\tinstalled\t12.0.1.3", "2\tweb\tinstalled\t12.0.1.0", `\.`, "",
		"COPY public.ir_config_parameter (id, key, value) FROM stdin;",
		"1\tdatabase.uuid\t00000000-1111-2222-3333-444444444444", `\.`, "",
		"COPY public.res_partner (id, name, comment) FROM stdin;", "",
	}
	io.WriteString(f, strings.Join(header, "\n"))
	var b strings.Builder
	line := strings.Repeat("x", 200)
	for i := range 1_500_000 {
		fmt.Fprintf(&b, "%d\tPartner %d\t%s\n", i, i, line)
		if b.Len() > 1<<20 {
			io.WriteString(f, b.String())
			b.Reset()
		}
	}
	io.WriteString(f, b.String())
	fmt.Fprint(f, "\\.\n\n")
}

// TestRequestThatKeepsKillingWorkersFails: after MaxAttempts interrupted
// attempts the request fails with a reason instead of running again.
func TestRequestThatKeepsKillingWorkersFails(t *testing.T) {
	t.Parallel()
	url, st, pool := setup(t)
	id := queue(t, st, 1, "db.dump", "test")[0]
	if _, err := pool.Exec(context.Background(), `UPDATE requests SET state = 'processing', attempts = 3,
		lease_owner = 'dead', lease_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	done := make(chan int64, 1)
	w := worker.New(logger(), st, recordingRunner{url: url, owner: "w"}, worker.Config{Slots: 1, PollEvery: 50 * time.Millisecond,
		MaxAttempts: 3, JobDoneFunc: func(id int64) { done <- id }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not claimed")
	}
	r, _ := st.Request(context.Background(), id)
	var runs int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM test_runs`).Scan(&runs)
	if r.State != store.StateFailed || r.CustomerMessage == nil || !strings.Contains(*r.CustomerMessage, "interrupted 3 times") || runs != 0 {
		t.Fatalf("state %s message %v runs %d", r.State, r.CustomerMessage, runs)
	}
}

// envRunner hands each job's env_vars to a channel.
type envRunner struct {
	recordingRunner
	env chan []string
}

func (r envRunner) Run(ctx context.Context, job engine.Job, hooks engine.Hooks) (engine.Result, error) {
	r.env <- job.EnvVars
	return engine.Result{UpgradedSize: 42}, nil
}

// TestStoredEnvVarsAreCheckedAgain: a request created before a name of its
// env_vars was denied (PSQLRC made psql run a file the upload chose) runs
// without it, and its log says so.
func TestStoredEnvVarsAreCheckedAgain(t *testing.T) {
	t.Parallel()
	_, st, _ := setup(t)
	ctx := context.Background()
	r, err := st.CreateRequest(ctx, store.NewRequest{Key: "k", Contract: "c", Email: "a@b.example", Target: "16.0", Aim: "test",
		Filename: "db.dump", EnvVars: []string{"UPG_DEBUG=1", "PSQLRC=filestore/0a/rc"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.BeginUpload(ctx, r.ID, "u", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CompleteUpload(ctx, r.ID, "u", store.Upload{Name: "upload", Size: 1 << 20, SHA256: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Process(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	run := envRunner{env: make(chan []string, 1)}
	w := worker.New(logger(), st, run, worker.Config{Slots: 1, PollEvery: 50 * time.Millisecond})
	wctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- w.Run(wctx) }()
	var env []string
	select {
	case env = <-run.env:
	case <-time.After(20 * time.Second):
		t.Fatal("the request did not run")
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(env, []string{"UPG_DEBUG=1"}) {
		t.Fatalf("the engine got env_vars %q", env)
	}
	events, err := st.Events(ctx, r.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var said bool
	for _, e := range events {
		said = said || (e.Level == "warning" && strings.Contains(e.Message, "PSQLRC"))
	}
	if !said {
		t.Errorf("the log does not say PSQLRC was dropped: %+v", events)
	}
}
