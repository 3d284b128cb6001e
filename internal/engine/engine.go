package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// Kinds of engine, chosen by UPGRADE_ENGINE.
const (
	Builtin     = "builtin"
	Command     = "command"
	Passthrough = "passthrough"
)

// CustomerError fails a request with a message meant for the customer.
type CustomerError struct{ Message string }

func (e *CustomerError) Error() string { return e.Message }

func customer(format string, args ...any) error {
	return &CustomerError{Message: fmt.Sprintf(format, args...)}
}

// Config configures the engine.
type Config struct {
	Kind string
	// DatabaseURL reaches the PostgreSQL where scratch databases are made
	// (CREATEDB needed).
	DatabaseURL string
	// Targets are the known series in order: they define version hops.
	Targets []string
	// ScriptsDir holds <series>/*.sql run for each hop (builtin engine).
	ScriptsDir string
	// Command is run through sh -c against the scratch database (command engine).
	Command        string
	CommandTimeout time.Duration
	Data           datadir.Dir
	// Namespace separates this deployment's scratch databases from others
	// on the same server; "" derives it from the application database
	// (AppDatabaseURL, else DatabaseURL).
	Namespace      string
	AppDatabaseURL string
	// MockDuration is how long a passthrough run lasts (a realistic demo);
	// scenarios without duration= last this long too.
	MockDuration time.Duration
}

// Job is one request to run.
type Job struct {
	ID       int64
	Attempt  int
	Target   string
	Aim      string
	Filename string
}

// Hooks report progress to the caller while a job runs.
type Hooks struct {
	// Log appends a line to the request log.
	Log func(level, message string)
	// Inspected records what inspection found, before the long steps.
	Inspected func(dump.Info) error
	// ScratchDB records the scratch database, so a crash can be cleaned up.
	ScratchDB func(name string) error
}

// Result is a finished job.
type Result struct {
	UpgradedSize int64
}

// Engine runs jobs.
type Engine struct {
	cfg    Config
	logger *slog.Logger
	libpq  []string // PG* variables for the client tools
	admin  *pgconn.Config
	ns     string
}

// New checks the configuration and returns an engine.
func New(logger *slog.Logger, cfg Config) (*Engine, error) {
	e := &Engine{cfg: cfg, logger: logger.With("component", "engine"), ns: cfg.Namespace}
	if e.ns == "" {
		app := cfg.AppDatabaseURL
		if app == "" {
			app = cfg.DatabaseURL
		}
		e.ns = namespaceOf(app)
	}
	switch cfg.Kind {
	case Passthrough:
		return e, nil
	case Builtin, Command:
	default:
		return nil, fmt.Errorf("engine: unknown engine %q (builtin, command or passthrough)", cfg.Kind)
	}
	if cfg.Kind == Command && strings.TrimSpace(cfg.Command) == "" {
		return nil, errors.New("engine: the command engine needs UPGRADE_ENGINE_COMMAND")
	}
	for _, tool := range []string{"pg_restore", "pg_dump", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("engine: %s not found on PATH: install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)", tool)
		}
	}
	pc, err := pgconn.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("engine: database URL: %w", err)
	}
	e.admin = pc
	e.libpq = []string{"PGHOST=" + pc.Host, "PGPORT=" + strconv.Itoa(int(pc.Port)), "PGUSER=" + pc.User}
	if pc.Password != "" {
		e.libpq = append(e.libpq, "PGPASSWORD="+pc.Password)
	}
	if pc.TLSConfig == nil {
		e.libpq = append(e.libpq, "PGSSLMODE=disable")
	}
	return e, nil
}

// ScratchPrefix starts the name of every scratch database:
// upgrade_scratch_<namespace>_<request>_<attempt>.
const ScratchPrefix = "upgrade_scratch_"

// prefix is this deployment's scratch prefix. The namespace keeps two
// deployments (or test runs) that share a PostgreSQL server from dropping
// each other's scratch databases.
func (e *Engine) prefix() string { return ScratchPrefix + e.ns + "_" }

// namespaceOf derives a namespace from the application's database: the
// server, the database and the search_path.
func namespaceOf(dbURL string) string {
	key := dbURL
	if c, err := pgx.ParseConfig(dbURL); err == nil {
		key = fmt.Sprintf("%s:%d/%s?%s", c.Host, c.Port, c.Database, c.RuntimeParams["search_path"])
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}

// Run runs one job to its end. A *CustomerError says why the request fails.
func (e *Engine) Run(ctx context.Context, job Job, hooks Hooks) (Result, error) {
	r := e.newRun(job, hooks)
	defer os.RemoveAll(r.work)
	return r.run(ctx)
}

func (e *Engine) newRun(job Job, hooks Hooks) *run {
	return &run{e: e, job: job, hooks: hooks, started: time.Now(), upload: e.cfg.Data.Path(job.ID, datadir.Upload),
		work: filepath.Join(e.cfg.Data.Request(job.ID), "work")}
}

// planModules lists the inspected modules with their target versions.
func (r *run) planModules() {
	r.modules = r.modules[:0]
	for name, v := range r.info.Modules {
		r.modules = append(r.modules, moduleChange{Name: name, Before: v, After: newVersion(v, r.info.DatabaseVersion, r.job.Target)})
	}
	sort.Slice(r.modules, func(i, j int) bool { return r.modules[i].Name < r.modules[j].Name })
}

type step struct {
	Name     string
	Duration time.Duration
}

type moduleChange struct {
	Name, Before, After string
}

type run struct {
	e        *Engine
	job      Job
	hooks    Hooks
	started  time.Time
	upload   string
	work     string
	info     dump.Info
	steps    []step
	warnings []string
	modules  []moduleChange
	scratch  string
}

func (r *run) log(level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.hooks.Log != nil {
		r.hooks.Log(level, msg)
	}
	if level == "warning" {
		r.warnings = append(r.warnings, msg)
	}
}

func (r *run) timed(name string, fn func() error) error {
	t := time.Now()
	r.log("info", "%s…", name)
	err := fn()
	d := time.Since(t)
	r.steps = append(r.steps, step{name, d})
	if err == nil {
		r.log("info", "%s: done in %s.", name, d.Round(time.Millisecond))
	}
	return err
}

func (r *run) run(ctx context.Context) (Result, error) {
	if err := os.MkdirAll(r.work, 0o700); err != nil {
		return Result{}, err
	}
	err := r.timed("Inspecting the dump", func() error {
		info, err := dump.InspectFile(r.upload)
		if err != nil {
			if dump.IsFormatError(err) {
				return customer("The uploaded file cannot be used: %v.", err)
			}
			return err
		}
		r.info = info
		r.log("info", "Found Odoo %s on PostgreSQL %s, layers %s.", info.DatabaseVersion, orUnknown(info.PostgreSQL), strings.Join(info.Compressions, " › "))
		if r.hooks.Inspected != nil {
			return r.hooks.Inspected(info)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if cmp := compareSeries(r.job.Target, r.info.DatabaseVersion); cmp <= 0 {
		return Result{}, customer("The target version %s is not newer than the database's version %s; choose a newer target.",
			r.job.Target, r.info.DatabaseVersion)
	}
	r.planModules()

	var res Result
	switch r.e.cfg.Kind {
	case Passthrough:
		err = r.timed("Passing the upload through", func() error {
			if err := r.passthrough(); err != nil {
				return err
			}
			if d := r.e.cfg.MockDuration; d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
			return nil
		})
	default:
		err = r.fullUpgrade(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	if st, err := os.Stat(r.e.cfg.Data.Path(r.job.ID, datadir.UpgradedArchive)); err == nil {
		res.UpgradedSize = st.Size()
	}
	if err := r.writeModules(); err != nil {
		return Result{}, err
	}
	if err := r.writeNotes(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// RunMock is a scenario's run: no PostgreSQL work and no failure on bad
// input (client test suites upload any bytes). The upload becomes the
// upgraded dump, inspection fills what it can, and the run lasts duration.
func (e *Engine) RunMock(ctx context.Context, job Job, hooks Hooks, duration time.Duration) (Result, error) {
	r := e.newRun(job, hooks)
	info, err := dump.InspectFile(r.upload)
	if err == nil {
		r.info = info
		if hooks.Inspected != nil {
			if err := hooks.Inspected(info); err != nil {
				return Result{}, err
			}
		}
		r.planModules()
	} else {
		r.log("info", "Scenario: the upload is not inspected (%v).", err)
	}
	if err := r.timed("Scenario run", func() error {
		if err := r.passthrough(); err != nil {
			return err
		}
		t := time.NewTimer(duration)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		return nil
	}); err != nil {
		return Result{}, err
	}
	if err := r.writeModules(); err != nil {
		return Result{}, err
	}
	if err := r.writeNotes(); err != nil {
		return Result{}, err
	}
	var res Result
	if st, err := os.Stat(e.cfg.Data.Path(job.ID, datadir.UpgradedArchive)); err == nil {
		res.UpgradedSize = st.Size()
	}
	return res, nil
}

// passthrough links the upload as the upgraded dump (no copy).
func (r *run) passthrough() error {
	dst := r.e.cfg.Data.Path(r.job.ID, datadir.UpgradedArchive)
	os.Remove(dst)
	if err := os.Link(r.upload, dst); err != nil {
		return fmt.Errorf("link the upload: %w", err)
	}
	return nil
}

func (r *run) fullUpgrade(ctx context.Context) error {
	if err := r.checkRestorable(); err != nil {
		return err
	}
	r.scratch = fmt.Sprintf("%s%d_%d", r.e.prefix(), r.job.ID, r.job.Attempt)
	if err := r.e.dropDB(ctx, r.scratch); err != nil {
		return err
	}
	if r.hooks.ScratchDB != nil {
		if err := r.hooks.ScratchDB(r.scratch); err != nil {
			return err
		}
	}
	if err := r.e.createDB(ctx, r.scratch); err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute) // bounded cleanup
		defer cancel()
		if err := r.e.dropDB(cctx, r.scratch); err != nil {
			r.e.logger.Error("drop scratch database", "db", r.scratch, "err", err)
		} else if r.hooks.ScratchDB != nil {
			r.hooks.ScratchDB("")
		}
	}()
	if err := r.timed("Restoring into a scratch database", func() error { return r.restore(ctx) }); err != nil {
		return err
	}
	switch r.e.cfg.Kind {
	case Builtin:
		if err := r.timed("Upgrading the modules to "+r.job.Target, func() error { return r.builtinUpgrade(ctx) }); err != nil {
			return err
		}
		if r.job.Aim == "test" {
			if err := r.timed("Neutralizing the test database", func() error { return r.neutralize(ctx) }); err != nil {
				return err
			}
		}
		if err := r.runScripts(ctx); err != nil {
			return err
		}
	case Command:
		if err := r.timed("Running the upgrade command", func() error { return r.runCommand(ctx) }); err != nil {
			return err
		}
		if err := r.readModulesAfter(ctx); err != nil {
			return err
		}
	}
	return r.timed("Dumping the upgraded database", func() error { return r.dumpResult(ctx) })
}

// pg_restore reads archives up to its own version: PostgreSQL 12-15 write
// 1.14, 16 writes 1.15, 17 and 18 write 1.16.
var archiveForPG = map[int]string{12: "1.14", 13: "1.14", 14: "1.14", 15: "1.14", 16: "1.15", 17: "1.16", 18: "1.16"}

func (r *run) checkRestorable() error {
	if r.info.ArchiveVersion == "" {
		return nil
	}
	out, err := exec.Command("pg_restore", "--version").Output()
	if err != nil {
		return fmt.Errorf("pg_restore --version: %w", err)
	}
	m := regexp.MustCompile(`(\d+)`).FindString(string(out))
	major, _ := strconv.Atoi(m)
	max := archiveForPG[major]
	if major > 18 {
		return nil
	}
	if max != "" && compareSeries(r.info.ArchiveVersion, max) > 0 {
		return customer("The dump was written by pg_dump %s (archive %s), newer than this server's pg_restore %d; dump it with pg_dump %d or older, or as plain SQL.",
			orUnknown(r.info.PgDump), r.info.ArchiveVersion, major, major)
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// compareSeries compares Odoo series ("16.0", "saas~17.2") and archive
// versions ("1.14") numerically.
func compareSeries(a, b string) int {
	pa, pb := seriesNums(a), seriesNums(b)
	for i := 0; i < 2; i++ {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func seriesNums(s string) [2]int {
	s = strings.TrimPrefix(s, "saas~")
	parts := strings.SplitN(s, ".", 3)
	var out [2]int
	for i := 0; i < 2 && i < len(parts); i++ {
		out[i], _ = strconv.Atoi(parts[i])
	}
	return out
}

// newVersion moves a module version to the target series:
// 12.0.1.3 -> 16.0.1.3.
func newVersion(v, source, target string) string {
	if strings.HasPrefix(v, source+".") {
		return target + v[len(source):]
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) == 3 {
		return target + "." + parts[2]
	}
	return v
}

func (e *Engine) adminConn(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(e.cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func (e *Engine) createDB(ctx context.Context, name string) error {
	conn, err := e.adminConn(ctx)
	if err != nil {
		return fmt.Errorf("create scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0 ENCODING 'UTF8'")
	if err != nil {
		return fmt.Errorf("create scratch database: %w", err)
	}
	return nil
}

func (e *Engine) dropDB(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, e.prefix()) {
		return fmt.Errorf("refusing to drop %q: not a scratch database", name)
	}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return fmt.Errorf("drop scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	if err != nil {
		return fmt.Errorf("drop scratch database: %w", err)
	}
	return nil
}

// DropScratchDB drops a scratch database (an earlier attempt's).
func (e *Engine) DropScratchDB(ctx context.Context, name string) error {
	if e.cfg.Kind == Passthrough {
		return nil
	}
	return e.dropDB(ctx, name)
}

// DropStaleScratchDBs drops the scratch databases no running attempt owns
// (left by a crash). It returns how many it dropped.
func (e *Engine) DropStaleScratchDBs(ctx context.Context, live map[string]bool) (int, error) {
	if e.cfg.Kind == Passthrough {
		return 0, nil
	}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return 0, err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, e.prefix())
	if err != nil {
		conn.Close(ctx)
		return 0, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	conn.Close(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if live[name] {
			continue
		}
		if err := e.dropDB(ctx, name); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// tool runs a PostgreSQL client tool against db with the engine's
// connection settings.
func (r *run) tool(ctx context.Context, db string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), r.e.libpq...)
	if db != "" {
		cmd.Env = append(cmd.Env, "PGDATABASE="+db)
	}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// tailOf keeps the last lines of a tool's output for a message.
type tailBuffer struct {
	lines []string
	part  string
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	if len(t.lines) > 20 {
		t.lines = t.lines[len(t.lines)-20:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	lines := t.lines
	if t.part != "" {
		lines = append(lines, t.part)
	}
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
