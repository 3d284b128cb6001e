package engine

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
)

// ErrNoSQL: the file's layers are unknown (not inspected yet) or cannot be
// turned into SQL.
var ErrNoSQL = errors.New("engine: no SQL form of this file")

// OpenSQL streams a dump as plain SQL, converting archives on the fly with
// pg_restore -f -; compressions are the dump's layers as inspection found
// them. Nothing is written to disk but a directory archive's files.
func OpenSQL(ctx context.Context, p string, compressions []string) (io.ReadCloser, error) {
	if len(compressions) == 0 || compressions[len(compressions)-1] != "sql" {
		return nil, ErrNoSQL
	}
	switch {
	case slices.Contains(compressions, "pgdmp_directory"):
		tmp, err := os.MkdirTemp(filepath.Dir(p), ".sql-stream-")
		if err != nil {
			return nil, err
		}
		r := &run{upload: p, work: tmp}
		r.info.Compressions = compressions
		dir, err := r.extractDirectory()
		if err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		return pgRestoreStream(ctx, nil, func() { os.RemoveAll(tmp) }, "-Fd", dir)
	case slices.Contains(compressions, "pgdmp_custom") || slices.Contains(compressions, "pgdmp_tar"):
		if len(outerLayers(compressions)) == 0 {
			return pgRestoreStream(ctx, nil, func() {}, p)
		}
		in, err := openInner(p, compressions)
		if err != nil {
			return nil, err
		}
		return pgRestoreStream(ctx, in, func() { in.Close() })
	}
	return openInner(p, compressions)
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

func pgRestoreStream(ctx context.Context, stdin io.Reader, cleanup func(), args ...string) (io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, "pg_restore", append([]string{"--no-owner", "--no-acl", "-f", "-"}, args...)...)
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
