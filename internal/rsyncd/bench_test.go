package rsyncd_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// benchBytes is the size of the benchmarks' dump folder:
// RSYNCD_BENCH_BYTES, default 256 MiB.
func benchBytes(b *testing.B) int64 {
	if s := os.Getenv("RSYNCD_BENCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return 256 << 20
}

// benchDump writes a directory-format dump of n bytes in four data files
// of incompressible bytes.
func benchDump(b *testing.B, dir string, n int64) {
	b.Helper()
	writeFile(b, filepath.Join(dir, "toc.dat"), []byte("toc"))
	rng := rand.NewChaCha8([32]byte{1})
	for i := range 4 {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.dat.gz", 3000+i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(f, rng, n/4); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransfer moves a dump folder with the client's command through
// an endpoint, for each cipher, both ways; "pipe" runs the same rsync
// pair over a plain pipe (-e with a script that starts rsync --server
// itself), the bound any SSH server can approach. Run with
// go test -run - -bench Transfer ./internal/rsyncd/.
func BenchmarkTransfer(b *testing.B) {
	n := benchBytes(b)
	for _, way := range []string{"upload", "download"} {
		for _, cipher := range []string{"pipe", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"} {
			b.Run(way+"/"+cipher, func(b *testing.B) {
				benchTransfer(b, way, cipher, n)
			})
		}
	}
}

func benchTransfer(b *testing.B, way, cipher string, n int64) {
	work, err := os.MkdirTemp("", "rsyncd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	data := filepath.Join(work, "data")
	local := filepath.Join(work, "local")
	for _, d := range []string{data, local} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	src := filepath.Join(local, "origin.dump")
	if way == "download" {
		src = filepath.Join(data, "upgraded.dump")
	}
	benchDump(b, src, n)
	good, _, pub := keys(b)

	var eArg, remoteDir string
	if cipher == "pipe" {
		script := filepath.Join(work, "pipe.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nwhile [ \"$1\" != rsync ]; do shift; done\ncd "+data+" && exec \"$@\"\n"), 0o755); err != nil {
			b.Fatal(err)
		}
		eArg, remoteDir = script, "x:"+data+"/"
	} else {
		srv, err := rsyncd.New(testLogger(b), rsyncd.Config{HostSigners: hostSigners(b), ListenHost: "127.0.0.1", Ciphers: []string{cipher}})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		dir := rsyncd.Upload
		if way == "download" {
			dir = rsyncd.Download
		}
		ep, err := srv.Open(rsyncd.Transfer{Direction: dir, Key: pub, Dir: data})
		if err != nil {
			b.Fatal(err)
		}
		kh := filepath.Join(work, "known_hosts")
		if err := os.WriteFile(kh, []byte(ep.KnownHosts("127.0.0.1")), 0o600); err != nil {
			b.Fatal(err)
		}
		eArg = fmt.Sprintf("ssh -p %d -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s -i %s", ep.Port(), kh, good)
		remoteDir = "odoo@127.0.0.1:/data/"
	}
	b.SetBytes(n)
	var client time.Duration
	self0, children0 := rusage(b, syscall.RUSAGE_SELF), rusage(b, syscall.RUSAGE_CHILDREN)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var args []string
		if way == "upload" {
			os.RemoveAll(filepath.Join(data, "origin.dump"))
			args = []string{src + "/", remoteDir + "origin.dump"}
		} else {
			os.RemoveAll(filepath.Join(local, "upgraded.dump"))
			args = []string{"--ignore-missing-args", remoteDir + "upgraded.dump", local + "/"}
		}
		b.StartTimer()
		cmd := append([]string{"--chmod=u+rwx,g+rwx,o+r", "--info=progress2", "--delete-after", "-are", eArg}, args...)
		c := exec.Command("rsync", cmd...)
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("rsync: %v\n%s", err, out)
		}
		client += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	b.StopTimer()
	// CPU per operation: the client's rsync and ssh; this process (the
	// endpoint, plus the benchmark's own bookkeeping); the server's rsync.
	self, children := rusage(b, syscall.RUSAGE_SELF)-self0, rusage(b, syscall.RUSAGE_CHILDREN)-children0
	b.ReportMetric((client / time.Duration(b.N)).Seconds(), "client-cpu-s/op")
	b.ReportMetric((self / time.Duration(b.N)).Seconds(), "endpoint-cpu-s/op")
	b.ReportMetric(((children - client) / time.Duration(b.N)).Seconds(), "server-rsync-cpu-s/op")
}

func rusage(b *testing.B, who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
