// Command pipeline times the processing pipeline's parts for
// bench/pipeline.sh: the builtin engine on one dump, and inspection of a
// dump next to reading the same file once.
//
//	pipeline engine -db URL -dump FILE -target 16.0
//	pipeline inspect -dump FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pipeline engine|inspect [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	db := fs.String("db", "", "PostgreSQL URL for scratch databases")
	dumpPath := fs.String("dump", "", "the dump")
	target := fs.String("target", "16.0", "target series")
	work := fs.String("work", os.TempDir(), "data directory for the engine")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "inspect":
		dropCaches()
		f, err := os.Open(*dumpPath)
		if err != nil {
			fail(err)
		}
		t := time.Now()
		n, err := io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			fail(err)
		}
		read := time.Since(t)
		dropCaches()
		t = time.Now()
		info, err := dump.InspectFile(*dumpPath)
		if err != nil {
			fail(err)
		}
		insp := time.Since(t)
		fmt.Printf("inspect: %d bytes; read once %.2fs (%.0f MiB/s), inspect %.2fs (%.2fx the read) -> %v odoo %s pg %s\n",
			n, read.Seconds(), float64(n)/(1<<20)/read.Seconds(), insp.Seconds(), insp.Seconds()/read.Seconds(),
			info.Compressions, info.DatabaseVersion, info.PostgreSQL)
	case "engine":
		data := datadir.New(*work)
		const id = 1
		dir, err := data.EnsureRequest(id)
		if err != nil {
			fail(err)
		}
		up := filepath.Join(dir, string(datadir.Upload))
		os.Remove(up)
		if err := os.Link(*dumpPath, up); err != nil {
			fail(err)
		}
		eng, err := engine.New(slog.New(slog.NewTextHandler(io.Discard, nil)), engine.Config{Kind: engine.Builtin,
			DatabaseURL: *db, Targets: []string{"12.0", "13.0", "14.0", "15.0", "16.0"}, Data: data})
		if err != nil {
			fail(err)
		}
		t := time.Now()
		_, err = eng.Run(context.Background(), engine.Job{ID: id, Attempt: 1, Target: *target, Aim: "production", Filename: "bench.dump"},
			engine.Hooks{Log: func(level, msg string) {
				fmt.Printf("  %6.1fs %s\n", time.Since(t).Seconds(), msg)
			}})
		if err != nil {
			fail(err)
		}
		fmt.Printf("engine: %.2fs\n", time.Since(t).Seconds())
	}
}

func dropCaches() { os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pipeline:", err)
	os.Exit(1)
}
