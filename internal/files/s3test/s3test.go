// Package s3test runs an S3-compatible object store for tests and
// benchmarks: gofakes3 serving the real S3 protocol over HTTP, in memory
// or on disk, that refuses requests signed with another access key.
package s3test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/spf13/afero"

	"github.com/upgrade-server/upgrade-server/internal/files"
)

// The credentials the server accepts.
const (
	AccessKey = "upgrade-test-key"
	SecretKey = "upgrade-test-secret"
)

// Server is a running object store.
type Server struct {
	URL string // http://127.0.0.1:PORT
	srv *http.Server
	ln  net.Listener
	// failFrom, when positive, is the first part number of a multipart
	// upload that the server refuses (see FailPartsFrom).
	failFrom atomic.Int64
	gets     atomic.Int64
}

// Gets is the number of GET requests served so far.
func (s *Server) Gets() int64 { return s.gets.Load() }

// FailPartsFrom makes the server refuse every multipart upload part
// numbered n or more, as a store that runs out of space mid-upload does
// (507 XMinioStorageFull, which clients do not retry); 0 lifts it.
func (s *Server) FailPartsFrom(n int) { s.failFrom.Store(int64(n)) }

func (s *Server) failParts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			s.gets.Add(1)
		}
		from := s.failFrom.Load()
		if part, err := strconv.ParseInt(r.URL.Query().Get("partNumber"), 10, 64); r.Method == http.MethodPut && from > 0 && err == nil && part >= from {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInsufficientStorage)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>XMinioStorageFull</Code>`+
				`<Message>Storage backend has reached its minimum free drive threshold.</Message></Error>`)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Config is the files.S3Config that reaches the server.
func (s *Server) Config() files.S3Config {
	return files.S3Config{Endpoint: s.URL, Region: "us-east-1", PathStyle: true, AccessKey: AccessKey, SecretKey: SecretKey}
}

// New starts a server on addr ("127.0.0.1:0") with the buckets given,
// keeping objects in memory, or under dir when it is not "".
func New(addr, dir string, buckets ...string) (*Server, error) {
	var backend gofakes3.Backend = s3mem.New()
	if dir != "" {
		b, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), dir))
		if err != nil {
			return nil, err
		}
		backend = b
	}
	for _, b := range buckets {
		if err := backend.CreateBucket(b); err != nil {
			return nil, err
		}
	}
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), ln: ln}
	s.srv = &http.Server{Handler: checkKey(s.failParts(faker.Server())), ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go s.srv.Serve(ln)
	return s, nil
}

// Start starts an in-memory server for a test and stops it at cleanup.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	s, err := New("127.0.0.1:0", "", buckets...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

var credentialRE = regexp.MustCompile(`Credential=([^/]+)/`)

// checkKey refuses requests signed with another access key, as a real
// store does (gofakes3 itself checks no signature).
func checkKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization"))
		if m == nil || m[1] != AccessKey {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>`+
				`<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
