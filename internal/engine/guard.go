package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// errTooLarge cancels a run whose restore writes past MaxRestoreBytes.
var errTooLarge = errors.New("the restore writes past its limit")

func (r *run) tooLarge() error {
	return customer("The restored database grew past %s, the limit this server allows (UPGRADE_MAX_RESTORE_BYTES); nothing more was restored.",
		dump.HumanBytes(r.e.cfg.MaxRestoreBytes))
}

// budget counts the bytes an upload expands to (decompressed layers,
// extracted files) against MaxRestoreBytes, across one run.
type budget struct {
	left, limit int64 // left < 0: no limit
}

func newBudget(limit int64) *budget {
	if limit <= 0 {
		return &budget{left: -1}
	}
	return &budget{left: limit, limit: limit}
}

func (b *budget) exceeded() error {
	return customer("The dump expands past %s, the limit this server allows (UPGRADE_MAX_RESTORE_BYTES): a compression bomb, or a database too large for this server.",
		dump.HumanBytes(b.limit))
}

// reader counts what is read through r.
func (b *budget) reader(r io.Reader) io.Reader {
	if b == nil || b.left < 0 {
		return r
	}
	return &budgetReader{r: r, b: b}
}

type budgetReader struct {
	r io.Reader
	b *budget
}

func (br *budgetReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	br.b.left -= int64(n)
	if br.b.left < 0 {
		return n, br.b.exceeded()
	}
	return n, err
}

// watchSize cancels ctx (cause errTooLarge) when the scratch database grows
// past MaxRestoreBytes, checked every two seconds.
func (r *run) watchSize(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if r.e.cfg.MaxRestoreBytes <= 0 {
		return ctx, func() { cancel(nil) }
	}
	base, err := r.dbSize(ctx)
	if err != nil {
		r.e.logger.Warn("scratch database size", "db", r.scratch.name, "err", err)
	}
	r.sizeBase = base
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if size, err := r.dbSize(ctx); err == nil && size-base > r.e.cfg.MaxRestoreBytes {
					cancel(errTooLarge)
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// checkSize fails the run if the scratch database is past its limit.
func (r *run) checkSize(ctx context.Context) error {
	if r.e.cfg.MaxRestoreBytes <= 0 {
		return nil
	}
	size, err := r.dbSize(ctx)
	if err != nil {
		return nil // the watch, or the next step, notices
	}
	if size-r.sizeBase > r.e.cfg.MaxRestoreBytes {
		return r.tooLarge()
	}
	return nil
}

func (r *run) dbSize(ctx context.Context) (int64, error) {
	conn, err := r.e.adminConn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, `SELECT pg_database_size($1)`, r.scratch.name).Scan(&n)
	return n, err
}

// scrub takes the server's own paths out of a tool's message before a
// customer reads it: a path under the work folder or the data directory
// becomes its last element. The log keeps the message whole.
func (r *run) scrub(msg string) string {
	prefixes := []string{r.e.cfg.DataRoot}
	if r.work != nil {
		prefixes = append([]string{r.work.path}, prefixes...)
	}
	if h := r.e.admin; h != nil && strings.HasPrefix(h.Host, "/") {
		prefixes = append(prefixes, h.Host)
	}
	for _, p := range prefixes {
		if p == "" || p == "/" {
			continue
		}
		re := regexp.MustCompile(regexp.QuoteMeta(p) + `(/[^\s"':]*)?`)
		msg = re.ReplaceAllStringFunc(msg, func(m string) string {
			rest := strings.TrimPrefix(m, p)
			if i := strings.LastIndexByte(rest, '/'); i >= 0 && i < len(rest)-1 {
				return rest[i+1:]
			}
			return "(server path)"
		})
	}
	// The tools run in the work folder, with names relative to it.
	for _, dir := range []string{"restore-dir/", "dump-dir/", "filestore/"} {
		msg = strings.ReplaceAll(msg, `"`+dir, `"`)
	}
	return msg
}

// psqlRestrict: the psql releases that know \restrict (August 2025), which
// restores plain SQL with every psql meta-command refused.
var psqlRestrict = map[int]int{13: 22, 14: 19, 15: 14, 16: 10, 17: 6}

// checkPsqlRestrict fails unless the psql on PATH has \restrict.
func checkPsqlRestrict() error {
	out, err := exec.Command("psql", "--version").Output()
	if err != nil {
		return fmt.Errorf("engine: psql --version: %w", err)
	}
	m := regexp.MustCompile(`(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		return fmt.Errorf("engine: cannot read psql's version from %q", strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major >= 18 {
		return nil
	}
	if need, ok := psqlRestrict[major]; ok && minor >= need {
		return nil
	}
	return fmt.Errorf("engine: psql %d.%d cannot restore plain SQL safely: it lacks \\restrict (psql 13.22, 14.19, 15.14, 16.10, 17.6 or newer), "+
		"without which a dump could run shell commands through psql; install a current PostgreSQL client", major, minor)
}
