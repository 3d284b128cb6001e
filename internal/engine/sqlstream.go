package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/token"
)

// ErrNoSQL: the file's layers are unknown (not inspected yet) or cannot be
// turned into SQL.
var ErrNoSQL = errors.New("engine: no SQL form of this file")

// OpenSQL streams a request's file, a dump with the given layers, or its
// set (files.Name.IsSet: a directory-format dump, files.UpgradedDir or a
// set upload), as plain SQL, converting archives on the fly with
// pg_restore -f - (run as the tools user, like every tool that reads an
// upload); compressions are the upload's layers as inspection found them
// (none: not inspected yet, ErrNoSQL). Nothing is written to disk but a
// directory archive's files.
func (e *Engine) OpenSQL(ctx context.Context, id int64, name files.Name, compressions []string) (io.ReadCloser, error) {
	if len(compressions) == 0 || compressions[len(compressions)-1] != "sql" {
		return nil, ErrNoSQL
	}
	b := newBudget(e.cfg.MaxRestoreBytes)
	if name.IsSet() {
		// A directory-format dump given as a set: its toc.dat and data
		// files are copied for pg_restore (the tools never reach the
		// store); compressions only say the request was inspected.
		set, err := e.cfg.Files.OpenSet(ctx, id, name)
		if err != nil {
			return nil, err
		}
		info, err := dump.InspectFS(set, dump.Limits{MaxExpanded: e.cfg.MaxRestoreBytes})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoSQL, err)
		}
		w, err := e.tools.newWorkDir(e.work, "sql-stream-"+token.Hex(8))
		if err != nil {
			return nil, err
		}
		r := &run{e: e, set: set, info: info, budget: b, work: w}
		if err := r.extractDirectory(w, "dir"); err != nil {
			w.Close()
			return nil, err
		}
		return e.pgRestoreStream(ctx, w.path, nil, func() { w.Close() }, "-Fd", "dir")
	}
	src, err := e.cfg.Files.Open(ctx, id, name)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (io.ReadCloser, error) {
		src.Close()
		return nil, err
	}
	switch {
	case slices.Contains(compressions, "pgdmp_directory"):
		info, err := dump.InspectLimited(src, src.Info().Size, dump.Limits{MaxExpanded: e.cfg.MaxRestoreBytes})
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrNoSQL, err))
		}
		w, err := e.tools.newWorkDir(e.work, "sql-stream-"+token.Hex(8))
		if err != nil {
			return fail(err)
		}
		r := &run{e: e, src: src, info: info, budget: b, work: w}
		if err := r.extractDirectory(w, "dir"); err != nil {
			w.Close()
			return fail(err)
		}
		return e.pgRestoreStream(ctx, w.path, nil, func() { w.Close(); src.Close() }, "-Fd", "dir")
	case slices.Contains(compressions, "pgdmp_custom") || slices.Contains(compressions, "pgdmp_tar"):
		if len(outerLayers(compressions)) == 0 {
			if f, ok := files.AsFile(src); ok {
				return e.pgRestoreStream(ctx, "/", f, func() { src.Close() })
			}
			return e.pgRestoreStream(ctx, "/", io.NewSectionReader(src, 0, src.Info().Size), func() { src.Close() })
		}
		in, err := openInner(src, compressions, b)
		if err != nil {
			return fail(err)
		}
		return e.pgRestoreStream(ctx, "/", in, func() { in.Close(); src.Close() })
	}
	in, err := openInner(src, compressions, b)
	if err != nil {
		return fail(err)
	}
	return struct {
		io.Reader
		io.Closer
	}{in, closerFunc(func() { in.Close(); src.Close() })}, nil
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
