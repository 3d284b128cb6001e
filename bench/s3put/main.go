// Command s3put is the baseline of bench/s3.sh: a plain upload of a file to
// an S3 endpoint with the client library and the options the server's S3
// store uses (internal/files/s3.go: minio-go, path-style, PutObject of a
// stream of unknown length in 16 MiB parts, two in flight, no payload
// sha256). It also makes the bucket and empties prefixes for the script.
// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
//
//	s3put -endpoint URL -bucket B mb
//	s3put -endpoint URL -bucket B -key K [-sha256] put FILE   # prints: seconds peak-RSS-KiB CPU-seconds
//	s3put -endpoint URL -bucket B rm PREFIX
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	endpoint := flag.String("endpoint", "", "the S3 endpoint, http://host:port")
	bucket := flag.String("bucket", "", "the bucket")
	key := flag.String("key", "s3put", "the object's name (put)")
	partSize := flag.Uint64("part-size", 16<<20, "part size, as the server's default")
	threads := flag.Uint("threads", 2, "parts in flight, as the server's default")
	hash := flag.Bool("sha256", false, "compute the sha256 on the way, as the server does: the file is read in 1 MiB buffers, hashed in a goroutine of its own and written into a pipe that PutObject reads")
	flag.Parse()
	u, err := url.Parse(*endpoint)
	if err != nil || u.Host == "" || *bucket == "" || flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: s3put -endpoint URL -bucket B [-key K] mb|put FILE|rm PREFIX")
		os.Exit(2)
	}
	// As internal/files.newS3 builds its client.
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		Secure:       u.Scheme == "https",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	switch flag.Arg(0) {
	case "mb":
		if ok, err := c.BucketExists(ctx, *bucket); err != nil {
			fail(err)
		} else if !ok {
			if err := c.MakeBucket(ctx, *bucket, minio.MakeBucketOptions{}); err != nil {
				fail(err)
			}
		}
	case "rm":
		objs := c.ListObjects(ctx, *bucket, minio.ListObjectsOptions{Prefix: flag.Arg(1), Recursive: true})
		for e := range c.RemoveObjects(ctx, *bucket, objs, minio.RemoveObjectsOptions{}) {
			if e.Err != nil {
				fail(e.Err)
			}
		}
	case "put":
		f, err := os.Open(flag.Arg(1))
		if err != nil {
			fail(err)
		}
		defer f.Close()
		var r io.Reader = struct{ io.Reader }{f} // a stream of unknown length, as the server's pipe
		var sum func() string
		if *hash {
			r, sum = hashing(f)
		}
		// The same options as (*s3store).putOptions in internal/files/s3.go.
		opts := minio.PutObjectOptions{PartSize: *partSize, NumThreads: *threads, ConcurrentStreamParts: true,
			DisableContentSha256: true, ContentType: "application/octet-stream"}
		t := time.Now()
		info, err := c.PutObject(ctx, *bucket, *key, r, -1, opts)
		if err != nil {
			fail(err)
		}
		d := time.Since(t)
		if st, err := os.Stat(flag.Arg(1)); err == nil && st.Size() != info.Size {
			fail(fmt.Errorf("stored %d bytes of %d", info.Size, st.Size()))
		}
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("%.3f %d %.2f\n", d.Seconds(), peakKiB(), cpu.Seconds())
		if sum != nil {
			fmt.Fprintln(os.Stderr, "sha256", sum())
		}
	default:
		fail(fmt.Errorf("unknown command %q", flag.Arg(0)))
	}
}

// hashing is internal/files' copyHashing feeding the S3 sink's pipe: four
// 1 MiB buffers, each written to the pipe, then hashed by another
// goroutine. sum waits for the end.
func hashing(src io.Reader) (io.Reader, func() string) {
	pr, pw := io.Pipe()
	done := make(chan string, 1)
	go func() {
		free := make(chan []byte, 4)
		for range 4 {
			free <- make([]byte, 1<<20)
		}
		toHash := make(chan []byte, 4)
		h := sha256.New()
		hashed := make(chan struct{})
		go func() {
			defer close(hashed)
			for b := range toHash {
				h.Write(b)
				free <- b[:cap(b)]
			}
		}()
		var err error
		for err == nil {
			buf := <-free
			var k int
			k, err = io.ReadFull(src, buf)
			if k > 0 {
				if _, werr := pw.Write(buf[:k]); werr != nil {
					err = werr
				}
				toHash <- buf[:k]
			} else {
				free <- buf
			}
		}
		close(toHash)
		<-hashed
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil
		}
		pw.CloseWithError(err)
		done <- hex.EncodeToString(h.Sum(nil))
	}()
	return pr, func() string { return <-done }
}

// peakKiB is this process's VmHWM.
func peakKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var n int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")), "%d", &n)
			return n
		}
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "s3put:", err)
	os.Exit(1)
}
