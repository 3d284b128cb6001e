package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
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

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/files"
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
	// DatabaseURL reaches the PostgreSQL server where scratch databases are
	// made, as a role that may create databases and roles (CREATEDB and
	// CREATEROLE, or a superuser). Nothing from an upload ever runs as that
	// role: each run restores into a database of its own, owned by a
	// throwaway unprivileged role (see Prepare).
	DatabaseURL string
	// Targets are the known series in order: they define version hops.
	Targets []string
	// ScriptsDir holds <series>/*.sql run for each hop (builtin engine).
	ScriptsDir string
	// Command is run through sh -c against the scratch database (command engine).
	Command string
	// Timeout bounds a whole run: restore, upgrade and dump (default 4h).
	Timeout time.Duration
	// Files are the request files: the engine reads the upload and writes
	// the artifacts there, on local disk or in object storage.
	Files FileStore
	// WorkDir is where runs' working folders go (<data>/work); DataRoot is
	// the data directory (its paths are kept out of customers' messages).
	WorkDir  string
	DataRoot string
	// Namespace separates this deployment's scratch databases from others
	// on the same server; "" derives it from the application database
	// (AppDatabaseURL, else DatabaseURL).
	Namespace string
	// AppDatabaseURL is the application's database; when scratch databases
	// share its server, Prepare revokes CONNECT on it from PUBLIC.
	AppDatabaseURL string
	// MockDuration is how long a passthrough run lasts (a realistic demo);
	// scenarios without duration= last this long too.
	MockDuration time.Duration
	// ToolsUser is the OS user the PostgreSQL tools and the command engine
	// run as when the server runs as root (default "nobody"); never root,
	// nor a user of ReservedUIDs.
	ToolsUser    string
	ReservedUIDs []uint32
	// MaxRestoreBytes caps what a restore may write: the bytes an upload
	// expands to (decompressed layers, extracted files) and the growth of
	// the scratch database. 0 means no cap.
	MaxRestoreBytes int64
}

// FileStore is what the engine needs of the request files; *files.Store
// satisfies it.
type FileStore interface {
	Open(ctx context.Context, id int64, name files.Name) (files.Object, error)
	OpenSet(ctx context.Context, id int64, set files.Name) (*files.Set, error)
	Stat(ctx context.Context, id int64, name files.Name) (files.Info, error)
	Create(ctx context.Context, id int64, name files.Name) (*files.Writer, error)
	CommitFS(ctx context.Context, id int64, set files.Name, fsys fs.FS, max int64) (files.Received, error)
	WriteFile(ctx context.Context, id int64, name files.Name, data []byte) error
	Link(ctx context.Context, id int64, from, to files.Name) error
	Remove(ctx context.Context, id int64, names ...files.Name) error
}

// Output is the form of a run's upgraded dump.
type Output string

const (
	// OutputAsUploaded is the upload's own format, as files.UpgradedArchive
	// (custom stays custom, an Odoo zip stays an Odoo zip…); for an upload
	// that is a set, a directory, as OutputDirectory.
	OutputAsUploaded Output = ""
	// OutputDirectory is a directory-format dump (what pg_restore
	// --format=directory reads) as the set files.UpgradedDir, with the
	// run's Odoo filestore, when it has one, as the set
	// files.FilestoreSet. No files.UpgradedArchive is made.
	OutputDirectory Output = "directory"
)

// Job is one request to run.
type Job struct {
	ID       int64
	Attempt  int
	Target   string
	Aim      string
	Filename string
	// Upload is the request's upload: a file of the store, or a set
	// (Upload.IsSet()) holding a directory-format dump, toc.dat at its top
	// (a folder uploaded as such); of a set only toc.dat and the data
	// files it names are read.
	Upload files.Name
	// Output is the form of the upgraded dump.
	Output Output
	// EnvVars are the request's NAME=VALUE variables (env_vars of Odoo's
	// client), set in the command engine's environment under the
	// server's own.
	EnvVars []string
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
	admin  *pgx.ConnConfig // the scratch server, as the role that makes scratch databases
	ns     string
	tools  *tools
	work   string // where runs' folders go (see tools.workRoot)
}

const cleanupTimeout = time.Minute

// New checks the configuration and returns an engine. It fails when the
// PostgreSQL client tools are missing, or psql is too old to restore plain
// SQL safely (it needs \restrict), or the tools user is unusable.
func New(logger *slog.Logger, cfg Config) (*Engine, error) {
	e := &Engine{cfg: cfg, logger: logger.With("component", "engine"), ns: cfg.Namespace}
	if e.ns == "" {
		app := cfg.AppDatabaseURL
		if app == "" {
			app = cfg.DatabaseURL
		}
		e.ns = namespaceOf(app)
	}
	if e.cfg.Timeout == 0 {
		e.cfg.Timeout = 4 * time.Hour
	}
	var err error
	if e.tools, err = newTools(cfg.ToolsUser, cfg.ReservedUIDs); err != nil {
		return nil, err
	}
	if e.work, err = e.tools.workRoot(cfg.WorkDir); err != nil {
		return nil, fmt.Errorf("engine: work folder: %w", err)
	}
	if e.work != cfg.WorkDir {
		e.logger.Info("the tools user cannot reach the data directory; runs work in a private temporary folder",
			"tools_user", e.tools.User(), "work_dir", e.work)
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
	if err := checkPsqlRestrict(); err != nil {
		return nil, err
	}
	if e.admin, err = pgx.ParseConfig(cfg.DatabaseURL); err != nil {
		return nil, errors.New("engine: the scratch database URL cannot be parsed")
	}
	return e, nil
}

// Close removes the runs' folder when it is a temporary one and empty (other
// processes sharing the data directory may still use it).
func (e *Engine) Close() error {
	if e.work != e.cfg.WorkDir {
		os.Remove(e.work)
	}
	return nil
}

// ToolsUser names the OS user that runs the tools on uploads.
func (e *Engine) ToolsUser() string { return e.tools.User() }

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
	if err := r.openUpload(ctx); err != nil {
		return Result{}, err
	}
	defer r.closeUpload()
	return r.run(ctx)
}

func (e *Engine) newRun(job Job, hooks Hooks) *run {
	return &run{e: e, job: job, hooks: hooks, started: time.Now(),
		scratch: scratchDB{name: fmt.Sprintf("%s%d_%d", e.prefix(), job.ID, job.Attempt)}}
}

// openUpload opens the request's upload, read by every step that needs it:
// a file (r.src) or a set (r.set).
func (r *run) openUpload(ctx context.Context) error {
	if r.job.Upload == "" {
		return customer("The request has no upload.")
	}
	if r.job.Output != OutputAsUploaded && r.job.Output != OutputDirectory {
		return fmt.Errorf("engine: unknown output %q", r.job.Output)
	}
	var err error
	if r.job.Upload.IsSet() {
		r.set, err = r.e.cfg.Files.OpenSet(ctx, r.job.ID, r.job.Upload)
	} else {
		r.src, err = r.e.cfg.Files.Open(ctx, r.job.ID, r.job.Upload)
	}
	if errors.Is(err, files.ErrNotExist) {
		return customer("The upload is missing from the server's storage; upload it again.")
	}
	if err != nil {
		return fmt.Errorf("open the upload: %w", err)
	}
	return nil
}

func (r *run) closeUpload() {
	if r.src != nil {
		r.src.Close()
	}
}

// inspect inspects the upload within limits.
func (r *run) inspect(lim dump.Limits) (dump.Info, error) {
	if r.set != nil {
		return dump.InspectFS(r.set, lim)
	}
	return dump.InspectLimited(r.src, r.src.Info().Size, lim)
}

// outputDir reports whether the run writes a directory-format dump.
func (r *run) outputDir() bool { return r.job.Output == OutputDirectory || r.set != nil }

// upgradedSize is the size of the upgraded dump (of all its files for a
// directory), 0 when there is none. A scenario run asked for a directory
// may have given the upload back as an archive (see passthrough).
func (r *run) upgradedSize(ctx context.Context) int64 {
	if r.outputDir() {
		if info, err := r.e.cfg.Files.Stat(ctx, r.job.ID, files.UpgradedDir); err == nil {
			return info.Size
		}
		if r.set != nil {
			return 0
		}
	}
	if info, err := r.e.cfg.Files.Stat(ctx, r.job.ID, files.UpgradedArchive); err == nil {
		return info.Size
	}
	return 0
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
	src      files.Object // the upload, a file
	set      *files.Set   // the upload, a set (src is nil)
	work     *workDir     // made by fullUpgrade
	budget   *budget      // what the upload may expand to
	info     dump.Info
	steps    []step
	warnings []string
	modules  []moduleChange
	scratch  scratchDB
	sizeBase int64 // the scratch database's size before the restore
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
	r.budget = newBudget(r.e.cfg.MaxRestoreBytes)
	err := r.timed("Inspecting the dump", func() error {
		info, err := r.inspect(dump.Limits{MaxExpanded: r.e.cfg.MaxRestoreBytes})
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
			if err := r.passthrough(ctx, false); err != nil {
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
		jctx, cancel := context.WithTimeoutCause(ctx, r.e.cfg.Timeout, errTimeout)
		err = r.fullUpgrade(jctx)
		cancel()
		var ce *CustomerError
		if errors.Is(context.Cause(jctx), errTimeout) && ctx.Err() == nil && !errors.As(err, &ce) {
			err = customer("The upgrade ran past its time limit of %s and was stopped.", r.e.cfg.Timeout)
		}
	}
	if err != nil {
		return Result{}, err
	}
	res.UpgradedSize = r.upgradedSize(ctx)
	if err := r.writeModules(ctx); err != nil {
		return Result{}, err
	}
	if err := r.writeNotes(ctx); err != nil {
		return Result{}, err
	}
	return res, nil
}

// RunMock is a scenario's run: no PostgreSQL work and no failure on bad
// input (client test suites upload any bytes). The upload becomes the
// upgraded dump, inspection fills what it can, and the run lasts duration.
func (e *Engine) RunMock(ctx context.Context, job Job, hooks Hooks, duration time.Duration) (Result, error) {
	r := e.newRun(job, hooks)
	if err := r.openUpload(ctx); err != nil {
		return Result{}, err
	}
	defer r.closeUpload()
	info, err := r.inspect(dump.Limits{})
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
		if err := r.passthrough(ctx, true); err != nil {
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
	if err := r.writeModules(ctx); err != nil {
		return Result{}, err
	}
	if err := r.writeNotes(ctx); err != nil {
		return Result{}, err
	}
	return Result{UpgradedSize: r.upgradedSize(ctx)}, nil
}

// passthrough makes the upload the upgraded dump, without copying it
// through this process (hard links, or the object store's own copies): a
// set upload becomes files.UpgradedDir, a file files.UpgradedArchive. For
// a directory output from a file, a zipped or tarred directory archive's
// files are extracted into files.UpgradedDir; any other dump cannot become
// a directory without PostgreSQL: a passthrough run fails, a scenario run
// (mock) gives the upload as files.UpgradedArchive and says so in the log.
func (r *run) passthrough(ctx context.Context, mock bool) error {
	switch {
	case r.set != nil:
		if err := r.e.cfg.Files.Link(ctx, r.job.ID, r.job.Upload, files.UpgradedDir); err != nil {
			return fmt.Errorf("link the upload: %w", err)
		}
		return nil
	case r.job.Output == OutputDirectory && r.info.Format == "directory" && r.info.DirTOC != "":
		return r.passDirectory(ctx)
	case r.job.Output == OutputDirectory && !mock:
		return customer("The passthrough engine cannot turn a %s dump into a directory-format dump (it runs no PostgreSQL); upload a directory-format dump.",
			orUnknown(r.info.Format))
	case r.job.Output == OutputDirectory:
		r.log("info", "Scenario: the upload is not a directory-format dump; the upgraded dump is the upload as it came, and no directory is made.")
	}
	if err := r.e.cfg.Files.Link(ctx, r.job.ID, r.job.Upload, files.UpgradedArchive); err != nil {
		return fmt.Errorf("link the upload: %w", err)
	}
	return nil
}

var errTimeout = errors.New("the run's time limit passed")

func (r *run) fullUpgrade(ctx context.Context) error {
	if err := r.checkRestorable(); err != nil {
		return err
	}
	if err := r.e.dropScratch(ctx, r.scratch.name); err != nil {
		return err
	}
	if r.hooks.ScratchDB != nil {
		if err := r.hooks.ScratchDB(r.scratch.name); err != nil {
			return err
		}
	}
	work, err := r.e.tools.newWorkDir(r.e.work, r.scratch.name)
	if err != nil {
		return fmt.Errorf("work folder: %w", err)
	}
	r.work = work
	defer func() {
		if err := work.Close(); err != nil {
			r.e.logger.Error("remove the work folder", "request_id", r.job.ID, "err", err)
		}
	}()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout) // bounded cleanup
		defer cancel()
		if err := r.e.dropScratch(cctx, r.scratch.name); err != nil {
			r.e.logger.Error("drop scratch database", "db", r.scratch.name, "err", err)
		} else if r.hooks.ScratchDB != nil {
			r.hooks.ScratchDB("")
		}
	}()
	if r.scratch, err = r.e.createScratch(ctx, r.scratch.name); err != nil {
		return err
	}
	ctx, stop := r.watchSize(ctx)
	defer stop()
	steps := []struct {
		name string
		fn   func(context.Context) error
		when bool
	}{
		{"Restoring into a scratch database", r.restore, true},
		{"Upgrading the modules to " + r.job.Target, r.builtinUpgrade, r.e.cfg.Kind == Builtin},
		{"Neutralizing the test database", r.neutralize, r.e.cfg.Kind == Builtin && r.job.Aim == "test"},
		{"", r.runScripts, r.e.cfg.Kind == Builtin},
		{"Running the upgrade command", r.runCommand, r.e.cfg.Kind == Command},
		{"", r.readModulesAfter, r.e.cfg.Kind == Command},
		{"Dumping the upgraded database", r.dumpResult, true},
	}
	for _, st := range steps {
		if !st.when {
			continue
		}
		run := func() error { return st.fn(ctx) }
		if st.name != "" {
			err = r.timed(st.name, run)
		} else {
			err = run()
		}
		if err == nil {
			err = r.checkSize(ctx) // also after a step too quick for the watch
		}
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errTooLarge) {
				return r.tooLarge()
			}
			// The server's SQL on the scratch database is plain; what the
			// database refuses there comes of what the dump left in it (a
			// trigger, a rule, a constraint).
			var pe *pgconn.PgError
			var ce *CustomerError
			if errors.As(err, &pe) && !errors.As(err, &ce) {
				what := st.name
				if what == "" {
					what = "The upgrade"
				}
				r.e.logger.Info("the scratch database refused the engine's SQL", "request_id", r.job.ID, "err", err)
				return customer("%s failed on the restored database: %s", what, r.scrub(pgErrorText(pe)))
			}
			return err
		}
	}
	return nil
}

// pgErrorText is a server error as psql would print it.
func pgErrorText(pe *pgconn.PgError) string {
	s := "ERROR: " + pe.Message
	if pe.Detail != "" {
		s += "\nDETAIL: " + pe.Detail
	}
	if pe.Where != "" {
		s += "\nCONTEXT: " + pe.Where
	}
	return s
}

// archiveForPG is the newest archive version each pg_restore reads (its
// own version's and older): PostgreSQL 12-15 write 1.14, 16 writes 1.15,
// 17 and 18 write 1.16.
var archiveForPG = map[int]string{12: "1.14", 13: "1.14", 14: "1.14", 15: "1.14", 16: "1.15", 17: "1.16", 18: "1.16"}

func (r *run) checkRestorable() error {
	if r.info.ArchiveVersion == "" {
		return nil
	}
	major, err := toolMajor("pg_restore")
	if err != nil {
		return err
	}
	if max := maxArchive(major); max != "" && compareSeries(r.info.ArchiveVersion, max) > 0 {
		return customer("The dump was written by pg_dump %s (archive %s), newer than this server's pg_restore %d; dump it with pg_dump %d or older, or as plain SQL.",
			orUnknown(r.info.PgDump), r.info.ArchiveVersion, major, major)
	}
	return nil
}

// maxArchive is the newest archive version pg_restore of a major version
// reads ("" when it is newer than this table knows: anything).
func maxArchive(major int) string {
	if major > 18 {
		return ""
	}
	if v, ok := archiveForPG[major]; ok {
		return v
	}
	return "1.13"
}

// toolMajor is the major version of a PostgreSQL client tool on PATH.
func toolMajor(tool string) (int, error) {
	out, err := exec.Command(tool, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", tool, err)
	}
	m := regexp.MustCompile(`(\d+)`).FindString(string(out))
	major, err := strconv.Atoi(m)
	if err != nil {
		return 0, fmt.Errorf("%s --version: cannot read %q", tool, strings.TrimSpace(string(out)))
	}
	return major, nil
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
	return pgx.ConnectConfig(ctx, e.admin.Copy())
}

// scratchConn connects to a scratch database as its own role.
func (e *Engine) scratchConn(ctx context.Context, s scratchDB) (*pgx.Conn, error) {
	cfg := e.admin.Copy()
	cfg.Database, cfg.User, cfg.Password = s.name, s.name, s.password
	cfg.RuntimeParams = map[string]string{"application_name": "upgrade-server"}
	return pgx.ConnectConfig(ctx, cfg)
}

// DropScratchDB drops a scratch database, its role and its work folder (an
// earlier attempt's).
func (e *Engine) DropScratchDB(ctx context.Context, name string) error {
	if e.cfg.Kind == Passthrough {
		return nil
	}
	if strings.HasPrefix(name, e.prefix()) {
		os.RemoveAll(filepath.Join(e.work, name))
	}
	return e.dropScratch(ctx, name)
}

// DropStaleScratchDBs drops the scratch databases and roles, and the work
// folders, that no running attempt owns (left by a crash). It returns how
// many databases it dropped.
func (e *Engine) DropStaleScratchDBs(ctx context.Context, live map[string]bool) (int, error) {
	if entries, err := os.ReadDir(e.work); err == nil {
		for _, d := range entries {
			if strings.HasPrefix(d.Name(), e.prefix()) && !live[d.Name()] {
				os.RemoveAll(filepath.Join(e.work, d.Name()))
			}
		}
	}
	if e.cfg.Kind == Passthrough {
		return 0, nil
	}
	conn, err := e.adminConn(ctx)
	if err != nil {
		return 0, err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)
		UNION SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)`, e.prefix())
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
		if err := e.dropScratch(ctx, name); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// libpq is the connection environment of a tool run against the scratch
// database, as its role.
func (r *run) libpq() []string {
	c := r.e.admin
	env := []string{"PGHOST=" + c.Host, "PGPORT=" + strconv.Itoa(int(c.Port)), "PGUSER=" + r.scratch.name,
		"PGPASSWORD=" + r.scratch.password, "PGDATABASE=" + r.scratch.name, "PGAPPNAME=upgrade-server"}
	if c.TLSConfig == nil {
		env = append(env, "PGSSLMODE=disable")
	} else {
		env = append(env, "PGSSLMODE=require")
	}
	return env
}

// tool prepares a PostgreSQL client tool run against the scratch database,
// as the tools user, in the work folder.
func (r *run) tool(ctx context.Context, name string, args ...string) *exec.Cmd {
	return r.e.tools.command(ctx, r.work.path, append(baseEnv(r.work.path), r.libpq()...), name, args...)
}

// tailBuffer keeps the last lines of a tool's output for a message.
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
