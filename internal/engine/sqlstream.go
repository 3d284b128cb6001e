package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// ErrNoSQL: the file's layers are unknown (not inspected yet) or cannot be
// turned into SQL.
var ErrNoSQL = errors.New("engine: no SQL form of this file")

// OpenSQL streams a dump as plain SQL, converting archives on the fly with
// pg_restore -f - (run as the tools user, like every tool that reads an
// upload); compressions are the dump's layers as inspection found them.
// Nothing is written to disk but a directory archive's files.
func (e *Engine) OpenSQL(ctx context.Context, p string, compressions []string) (io.ReadCloser, error) {
	if len(compressions) == 0 || compressions[len(compressions)-1] != "sql" {
		return nil, ErrNoSQL
	}
	b := newBudget(e.cfg.MaxRestoreBytes)
	switch {
	case slices.Contains(compressions, "pgdmp_directory"):
		info, err := dump.InspectFileLimited(p, dump.Limits{MaxExpanded: e.cfg.MaxRestoreBytes})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoSQL, err)
		}
		w, err := e.tools.newWorkDir(e.work, "sql-stream-"+randomHex(8))
		if err != nil {
			return nil, err
		}
		r := &run{e: e, upload: p, info: info, budget: b, work: w}
		if err := r.extractDirectory(w, "dir"); err != nil {
			w.Close()
			return nil, err
		}
		return e.pgRestoreStream(ctx, w.path, nil, func() { w.Close() }, "-Fd", "dir")
	case slices.Contains(compressions, "pgdmp_custom") || slices.Contains(compressions, "pgdmp_tar"):
		if len(outerLayers(compressions)) == 0 {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			return e.pgRestoreStream(ctx, "/", f, func() { f.Close() })
		}
		in, err := openInner(p, compressions, b)
		if err != nil {
			return nil, err
		}
		return e.pgRestoreStream(ctx, "/", in, func() { in.Close() })
	}
	return openInner(p, compressions, b)
}

type cmdStream struct {
	io.Reader
	cmd     *exec.Cmd
	cleanup func()
}

func (c *cmdStream) Close() error {
	c.cmd.Process.Kill()
	c.cmd.Wait()
	c.cleanup()
	return nil
}

func (e *Engine) pgRestoreStream(ctx context.Context, dir string, stdin io.Reader, cleanup func(), args ...string) (io.ReadCloser, error) {
	cmd := e.tools.command(ctx, dir, baseEnv(dir), "pg_restore", append([]string{"--no-owner", "--no-acl", "-f", "-"}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.StdoutPipe()
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, err
	}
	return &cmdStream{Reader: out, cmd: cmd, cleanup: cleanup}, nil
}
