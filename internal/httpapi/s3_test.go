package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/files/s3test"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
)

// TestUploadStoreFailsMidway: on the S3 backend, an object store that
// refuses a part in the middle of an upload makes the upload answer
// SERVER:ERROR; the earlier complete upload stays the request's, byte for
// byte, and no partial object shows.
func TestUploadStoreFailsMidway(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, "bucket")
	fs, err := files.Open(context.Background(), slog.New(slog.DiscardHandler),
		files.Config{Local: t.TempDir(), URL: "s3://bucket/uploads", S3: srv.Config()})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *httpapi.Config) { c.Files = fs })
	e.files = fs
	id := e.create()
	reqID := mustID(t, id)

	first := make([]byte, 20<<20) // over one part: a multipart upload
	rand.Read(first)
	noFailures(t, "first upload", e.upload("POST", id, bytes.NewReader(first)))

	srv.FailPartsFrom(2)
	second := make([]byte, 40<<20)
	rand.Read(second)
	a := e.upload("POST", id, bytes.NewReader(second))
	if !slices.Equal(a.reasons(), []string{"SERVER:ERROR"}) {
		t.Fatalf("upload with the store failing: %s", a.raw)
	}
	if got := e.stored(reqID); !bytes.Equal(got, first) {
		t.Fatalf("the earlier upload changed: %d bytes stored", len(got))
	}
	assertNoPartFiles(t, e, reqID)
	r, err := e.store.Request(context.Background(), reqID)
	if err != nil || *r.UploadSize != int64(len(first)) || r.Uploading {
		t.Fatalf("after the failed upload: %+v %v", r, err)
	}

	// Once the store recovers, the same upload goes through.
	srv.FailPartsFrom(0)
	noFailures(t, "upload after recovery", e.upload("POST", id, bytes.NewReader(second)))
	if got := e.stored(reqID); !bytes.Equal(got, second) {
		t.Fatalf("after recovery %d bytes stored, want the second upload", len(got))
	}
	assertNoPartFiles(t, e, reqID)
}
