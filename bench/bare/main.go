// Command bare is the upload benchmark's baseline: an HTTP handler that only
// copies the request body to a file (with -sha256 hashing it on the way, with
// -fsync fsyncing it), nothing else.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", os.TempDir(), "where bodies are written")
	fsync := flag.Bool("fsync", false, "fsync each body before answering")
	hash := flag.Bool("sha256", false, "hash each body with sha256 while copying")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("http://%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Create(filepath.Join(*dir, "bare-upload"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		var dst io.Writer = f
		h := sha256.New()
		if *hash {
			dst = io.MultiWriter(f, h)
		}
		n, err := io.Copy(dst, r.Body)
		if err == nil && *fsync {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
	})))
}
