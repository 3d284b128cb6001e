package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/jackc/pgx/v5"
)

// scratchConn connects to the run's scratch database as its role.
func (r *run) scratchConn(ctx context.Context) (*pgx.Conn, error) {
	return r.e.scratchConn(ctx, r.scratch)
}

// builtinUpgrade moves every installed module to the target series.
func (r *run) builtinUpgrade(ctx context.Context) error {
	conn, err := r.scratchConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	col := "latest_version"
	var hasLatest bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_name = 'ir_module_module' AND column_name = 'latest_version' AND table_schema = current_schema())`).Scan(&hasLatest); err != nil {
		return err
	}
	if !hasLatest {
		col = "db_version"
	}
	rows, err := tx.Query(ctx, `SELECT id, name, `+col+` FROM ir_module_module
		WHERE state IN ('installed', 'to upgrade') AND `+col+` IS NOT NULL`)
	if err != nil {
		return customer("The database has no readable ir_module_module table: %v.", err)
	}
	type mod struct {
		id            int64
		name, version string
	}
	mods, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (mod, error) {
		var m mod
		err := row.Scan(&m.id, &m.name, &m.version)
		return m, err
	})
	if err != nil {
		return err
	}
	r.modules = r.modules[:0]
	for _, m := range mods {
		nv := newVersion(m.version, r.info.DatabaseVersion, r.job.Target)
		if _, err := tx.Exec(ctx, `UPDATE ir_module_module SET `+col+` = $2, state = 'installed' WHERE id = $1`, m.id, nv); err != nil {
			return err
		}
		r.modules = append(r.modules, moduleChange{Name: m.name, Before: m.version, After: nv})
	}
	sort.Slice(r.modules, func(i, j int) bool { return r.modules[i].Name < r.modules[j].Name })
	r.log("info", "%d modules moved from %s to %s.", len(mods), r.info.DatabaseVersion, r.job.Target)
	return tx.Commit(ctx)
}

// neutralize does what Odoo does to test databases, where the tables exist:
// scheduled actions and mail servers off, database.is_neutralized set.
func (r *run) neutralize(ctx context.Context) error {
	conn, err := r.scratchConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	exists := func(table string) bool {
		var ok bool
		conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok)
		return ok
	}
	for _, t := range []struct{ table, what string }{
		{"ir_cron", "scheduled actions"}, {"ir_mail_server", "outgoing mail servers"}, {"fetchmail_server", "incoming mail servers"},
	} {
		if !exists(t.table) {
			continue
		}
		tag, err := conn.Exec(ctx, `UPDATE `+t.table+` SET active = false WHERE active`)
		if err != nil {
			return fmt.Errorf("neutralize %s: %w", t.table, err)
		}
		r.log("info", "Neutralized: %d %s deactivated.", tag.RowsAffected(), t.what)
	}
	if exists("ir_config_parameter") {
		tag, err := conn.Exec(ctx, `UPDATE ir_config_parameter SET value = 'True' WHERE key = 'database.is_neutralized'`)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if _, err := conn.Exec(ctx, `INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'True')`); err != nil {
				return fmt.Errorf("neutralize: %w", err)
			}
		}
	}
	return nil
}

// hops are the series after the source up to the target, in order.
func (r *run) hops() []string {
	var out []string
	for _, t := range r.e.cfg.Targets {
		if compareSeries(t, r.info.DatabaseVersion) > 0 && compareSeries(t, r.job.Target) <= 0 {
			out = append(out, t)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return compareSeries(out[i], out[j]) < 0 })
	return out
}

var psqlErrorRE = regexp.MustCompile(`psql:([^:]+):(\d+): (ERROR: .*)`)

// runScripts runs the operator's <series>/*.sql for each hop, each file in
// its own transaction; a failure names the file and line.
func (r *run) runScripts(ctx context.Context) error {
	if r.e.cfg.ScriptsDir == "" {
		return nil
	}
	for _, hop := range r.hops() {
		files, _ := filepath.Glob(filepath.Join(r.e.cfg.ScriptsDir, hop, "*.sql"))
		sort.Strings(files)
		for _, f := range files {
			rel, _ := filepath.Rel(r.e.cfg.ScriptsDir, f)
			err := r.timed("Running upgrade script "+rel, func() error {
				// On standard input: the tools user needs no access to the
				// scripts folder. Scripts are the operator's, so psql runs
				// them unrestricted, but as the scratch role.
				script, err := os.Open(f)
				if err != nil {
					return err
				}
				defer script.Close()
				cmd := r.tool(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-")
				cmd.Stdin = script
				var tail tailBuffer
				cmd.Stdout, cmd.Stderr = &tail, &tail
				if err := cmd.Run(); err != nil {
					if m := psqlErrorRE.FindStringSubmatch(tail.String()); m != nil {
						return customer("Upgrade script %s failed at line %s: %s", rel, m[2], m[3])
					}
					return customer("Upgrade script %s failed: %s", rel, orUnknown(tail.String()))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// runCommand runs the operator's upgrade command against the scratch
// database, streaming its output into the request log.
func (r *run) runCommand(ctx context.Context) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := r.work.mkdirAll("filestore"); err != nil {
		return err
	}
	// The request's own variables (env_vars of Odoo's client, checked at
	// create) come before the server's, which win over them.
	env := commandEnv(r.job.EnvVars, append(r.libpq(),
		"HOME="+r.work.path, "TMPDIR="+r.work.path,
		"UPGRADE_SOURCE_VERSION="+r.info.DatabaseVersion,
		"UPGRADE_TARGET_VERSION="+r.job.Target,
		"UPGRADE_AIM="+r.job.Aim,
		fmt.Sprintf("UPGRADE_REQUEST_ID=%d", r.job.ID),
		"UPGRADE_FILESTORE_DIR="+r.work.Path("filestore")))
	cmd := r.e.tools.command(cctx, r.work.path, env, "sh", "-c", r.e.cfg.Command)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return customer("The upgrade command could not start: %v", err)
	}
	pw.Close()
	var tail tailBuffer
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		tail.Write([]byte(line + "\n"))
		r.log("info", "| %s", line)
	}
	pr.Close()
	err = cmd.Wait()
	switch {
	case errors.Is(context.Cause(ctx), errTimeout):
		return customer("The upgrade command ran past the time limit of %s. Last output:\n%s", r.e.cfg.Timeout, tail.String())
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return customer("The upgrade command failed (%v). Last output:\n%s", err, tail.String())
	}
	return nil
}

// readModulesAfter reads the module versions the command left.
func (r *run) readModulesAfter(ctx context.Context) error {
	conn, err := r.scratchConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	after := map[string]string{}
	rows, err := conn.Query(ctx, `SELECT name, COALESCE(latest_version, '') FROM ir_module_module WHERE state = 'installed'`)
	if err != nil {
		r.log("warning", "Could not read the modules after the command: %v", err)
		return nil
	}
	for rows.Next() {
		var n, v string
		if rows.Scan(&n, &v) == nil {
			after[n] = v
		}
	}
	rows.Close()
	for i := range r.modules {
		r.modules[i].After = after[r.modules[i].Name]
	}
	for n, v := range after {
		if _, ok := r.info.Modules[n]; !ok {
			r.modules = append(r.modules, moduleChange{Name: n, After: v})
		}
	}
	sort.Slice(r.modules, func(i, j int) bool { return r.modules[i].Name < r.modules[j].Name })
	return nil
}
