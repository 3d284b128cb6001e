// Command pipeline times the processing pipeline's parts for
// bench/pipeline.sh: the builtin engine on one dump, and inspection of a
// dump next to reading the same file once.
//
//	pipeline engine -db URL -dump FILE -target 16.0 [-storage s3://bucket/prefix -s3-endpoint URL]
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
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
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
	storage := fs.String("storage", "", "UPGRADE_STORAGE: file:///dir or s3://bucket/prefix (default: <work>/requests)")
	s3Endpoint := fs.String("s3-endpoint", "", "the S3 endpoint (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
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
		ctx := context.Background()
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		store, err := files.Open(ctx, logger, files.Config{URL: *storage, Local: *work,
			S3: files.S3Config{Endpoint: *s3Endpoint, PathStyle: true}})
		if err != nil {
			fail(err)
		}
		const id = 1
		// The dump goes into the store first (not timed): as an upload would.
		if err := store.RemoveRequest(ctx, id); err != nil {
			fail(err)
		}
		in, err := os.Open(*dumpPath)
		if err != nil {
			fail(err)
		}
		t0 := time.Now()
		if _, err := store.Receive(ctx, id, files.Upload, in, 0); err != nil {
			fail(err)
		}
		in.Close()
		fmt.Printf("into the store: %.2fs, peak RSS %d MiB\n", time.Since(t0).Seconds(), status("VmHWM")/1024)
		debug.FreeOSMemory()                                  // the copy's garbage is not the engine's
		os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // VmHWM from here on
		rss := status("VmRSS")
		eng, err := engine.New(logger, engine.Config{Kind: engine.Builtin, DatabaseURL: *db,
			Targets: []string{"12.0", "13.0", "14.0", "15.0", "16.0"}, Files: store, WorkDir: filepath.Join(*work, "work"), DataRoot: *work})
		if err != nil {
			fail(err)
		}
		defer eng.Close()
		t := time.Now()
		_, err = eng.Run(ctx, engine.Job{ID: id, Attempt: 1, Target: *target, Aim: "production", Filename: "bench.dump", Upload: files.Upload},
			engine.Hooks{Log: func(level, msg string) {
				fmt.Printf("  %6.1fs %s\n", time.Since(t).Seconds(), msg)
			}})
		if err != nil {
			fail(err)
		}
		fmt.Printf("engine: %.2fs (%s)\n", time.Since(t).Seconds(), store.Describe())
		fmt.Printf("engine peak RSS: %d MiB, from %d MiB at the start (this process; pg_restore and pg_dump not included)\n", status("VmHWM")/1024, rss/1024)
	}
}

// status is a field of this process's /proc/self/status in KiB (VmHWM, VmRSS).
func status(field string) int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func dropCaches() { os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pipeline:", err)
	os.Exit(1)
}
