package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config reaches an S3-compatible object store. Empty fields fall back
// to the usual AWS environment variables (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL),
// then ~/.aws/credentials, then an instance role.
type S3Config struct {
	// Endpoint is the store's URL, "http://127.0.0.1:9000" (default: AWS S3).
	Endpoint string
	Region   string
	// PathStyle addresses buckets as <endpoint>/<bucket> rather than
	// <bucket>.<endpoint> (most self-hosted stores want it).
	PathStyle bool
	AccessKey string
	SecretKey string
	// PartSize is the size of a multipart upload's parts (default 16 MiB);
	// a write holds two of them in memory.
	PartSize uint64
}

type s3store struct {
	c        *minio.Client
	bucket   string
	prefix   string // "" or "some/prefix/"
	endpoint string
	partSize uint64
}

func newS3(ctx context.Context, u *url.URL, cfg S3Config) (*s3store, error) {
	bucket := u.Host
	if bucket == "" {
		return nil, fmt.Errorf("UPGRADE_STORAGE: %q names no bucket (s3://bucket/prefix)", u.String())
	}
	p := strings.Trim(u.Path, "/")
	if p != "" {
		p += "/"
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	region := cfg.Region
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if region == "" {
			region = os.Getenv(v)
		}
	}
	secure := true
	host := "s3.amazonaws.com"
	if endpoint != "" {
		eu, err := url.Parse(endpoint)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return nil, fmt.Errorf("UPGRADE_S3_ENDPOINT: %q is not an http(s) URL", endpoint)
		}
		host, secure = eu.Host, eu.Scheme == "https"
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
		})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("UPGRADE_S3_ENDPOINT: %w", err)
	}
	s := &s3store{c: c, bucket: bucket, prefix: p, endpoint: endpoint, partSize: cfg.PartSize}
	if s.partSize == 0 {
		s.partSize = 16 << 20
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := c.BucketExists(cctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("UPGRADE_STORAGE: cannot reach the bucket %s at %s: %s (check UPGRADE_S3_ENDPOINT, UPGRADE_S3_REGION and the credentials, UPGRADE_S3_ACCESS_KEY/UPGRADE_S3_SECRET_KEY or AWS_*)",
			bucket, s.where(), s3Reason(err))
	}
	if !ok {
		return nil, fmt.Errorf("UPGRADE_STORAGE: the bucket %s does not exist at %s; create it first", bucket, s.where())
	}
	return s, nil
}

// s3Reason is an S3 error for a message: its code and text, never a
// credential.
func s3Reason(err error) string {
	if r := minio.ToErrorResponse(err); r.Code != "" {
		return r.Code + ": " + r.Message
	}
	return err.Error()
}

func (s *s3store) where() string {
	if s.endpoint != "" {
		return s.endpoint
	}
	return "AWS S3"
}

func (s *s3store) describe() string {
	return fmt.Sprintf("s3://%s/%s at %s", s.bucket, s.prefix, s.where())
}

func (s *s3store) obj(key string) string { return s.prefix + "requests/" + key }

func (s *s3store) putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{PartSize: s.partSize, NumThreads: 2, ConcurrentStreamParts: true,
		DisableContentSha256: true, ContentType: "application/octet-stream"}
}

// s3Sink writes an object: a small one in one request (the first MiB is
// held in memory), a larger one as a multipart upload streamed from a
// pipe, which exists only once complete.
type s3Sink struct {
	s    *s3store
	ctx  context.Context
	key  string
	buf  []byte
	pw   *io.PipeWriter
	done chan error
}

const smallObject = 1 << 20

var errAborted = errors.New("files: write aborted")

func (s *s3store) create(ctx context.Context, key string) (sink, error) {
	return &s3Sink{s: s, ctx: context.WithoutCancel(ctx), key: key}, nil
}

func (sk *s3Sink) Write(p []byte) (int, error) {
	if sk.pw == nil {
		if len(sk.buf)+len(p) <= smallObject {
			sk.buf = append(sk.buf, p...)
			return len(p), nil
		}
		pr, pw := io.Pipe()
		sk.pw, sk.done = pw, make(chan error, 1)
		go func() {
			_, err := sk.s.c.PutObject(sk.ctx, sk.s.bucket, sk.s.obj(sk.key), pr, -1, sk.s.putOptions())
			pr.CloseWithError(err) // unblock a writer if the upload failed
			sk.done <- err
		}()
		held := sk.buf
		sk.buf = nil
		if _, err := pw.Write(held); err != nil {
			return 0, err
		}
	}
	return sk.pw.Write(p)
}

func (sk *s3Sink) commit() error {
	if sk.pw == nil {
		_, err := sk.s.c.PutObject(sk.ctx, sk.s.bucket, sk.s.obj(sk.key), bytes.NewReader(sk.buf), int64(len(sk.buf)), sk.s.putOptions())
		return err
	}
	sk.pw.Close()
	return <-sk.done
}

func (sk *s3Sink) abort() {
	if sk.pw == nil {
		return
	}
	sk.pw.CloseWithError(errAborted) // the client aborts the multipart upload
	<-sk.done
}

// Read-ahead of ReadAt: the window read after a sequential ReadAt doubles
// from readAheadMin up to readAheadMax.
const (
	readAheadMin = 64 << 10
	readAheadMax = 8 << 20
)

type s3Object struct {
	*minio.Object
	info Info

	mu     sync.Mutex
	win    []byte // bytes read ahead, from winOff
	winOff int64
	next   int64 // where the last ReadAt ended
	ahead  int   // the next read-ahead (0 after a jump)
}

func (o *s3Object) Info() Info { return o.info }

// ReadAt is one ranged GET per call in minio-go, so an io.SectionReader
// over an object (the engine streams an upload to pg_restore so, 32 KiB a
// read) would ask for each 32 KiB in a request of its own. Calls that
// continue where the last one ended read ahead instead, into a window that
// doubles up to 8 MiB; a jump (inspection skipping the data it does not
// need) reads what it asks for, as before.
func (o *s3Object) ReadAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if off < 0 {
		return 0, errors.New("files: negative offset")
	}
	n := 0
	defer func() { o.next = off + int64(n) }()
	for n < len(p) {
		at := off + int64(n)
		if at >= o.info.Size {
			return n, io.EOF
		}
		if at >= o.winOff && at < o.winOff+int64(len(o.win)) {
			n += copy(p[n:], o.win[at-o.winOff:])
			continue
		}
		if at == o.next || at == o.winOff+int64(len(o.win)) {
			o.ahead = min(max(2*o.ahead, readAheadMin), readAheadMax)
		} else {
			o.ahead = 0
		}
		if len(p)-n >= o.ahead {
			k, err := o.Object.ReadAt(p[n:], at)
			n += k
			return n, err
		}
		size := int(min(int64(o.ahead), o.info.Size-at))
		if cap(o.win) < size {
			o.win = make([]byte, o.ahead)
		}
		k, err := o.Object.ReadAt(o.win[:size], at)
		o.win, o.winOff = o.win[:k], at
		if k < size {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the object is shorter than its size
			}
			return n, err
		}
	}
	return n, nil
}

func (o *s3Object) Close() error {
	o.mu.Lock()
	o.win = nil
	o.mu.Unlock()
	return o.Object.Close()
}

func (s *s3store) open(ctx context.Context, key string) (Object, error) {
	o, err := s.c.GetObject(ctx, s.bucket, s.obj(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.notExist(err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, s.notExist(err)
	}
	return &s3Object{Object: o, info: Info{Name: Name(key), Size: st.Size, ModTime: st.LastModified, ETag: st.ETag}}, nil
}

func (s *s3store) notExist(err error) error {
	if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" || r.StatusCode == 404 {
		return ErrNotExist
	}
	return err
}

func (s *s3store) stat(ctx context.Context, key string) (Info, error) {
	st, err := s.c.StatObject(ctx, s.bucket, s.obj(key), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.notExist(err)
	}
	return Info{Name: Name(key), Size: st.Size, ModTime: st.LastModified, ETag: st.ETag}, nil
}

func (s *s3store) copy(ctx context.Context, from, to string) error {
	_, err := s.c.CopyObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.obj(to)},
		minio.CopySrcOptions{Bucket: s.bucket, Object: s.obj(from)})
	if err != nil && s.notExist(err) == ErrNotExist {
		return ErrNotExist
	}
	if r := minio.ToErrorResponse(err); r.Code == "InvalidRequest" || r.Code == "EntityTooLarge" {
		// Objects over 5 GiB: copy part by part on the store's side.
		_, err = s.c.ComposeObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.obj(to)},
			minio.CopySrcOptions{Bucket: s.bucket, Object: s.obj(from)})
	}
	return err
}

func (s *s3store) putFile(ctx context.Context, key string, lf *localFile) error {
	if _, err := s.c.PutObject(ctx, s.bucket, s.obj(key), io.NewSectionReader(lf.f, 0, lf.st.Size()), lf.st.Size(), s.putOptions()); err != nil {
		return err
	}
	return os.Remove(lf.path)
}

func (s *s3store) remove(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := s.c.RemoveObject(ctx, s.bucket, s.obj(k), minio.RemoveObjectOptions{}); err != nil && s.notExist(err) != ErrNotExist {
			return err
		}
	}
	return nil
}

func (s *s3store) removePrefix(ctx context.Context, p string) error {
	objs := make(chan minio.ObjectInfo)
	go func() {
		defer close(objs)
		for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.obj(p), Recursive: true}) {
			if o.Err != nil {
				return
			}
			objs <- o
		}
	}()
	for e := range s.c.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return e.Err
		}
	}
	return nil
}

func (s *s3store) list(ctx context.Context, p string) ([]Info, error) {
	var out []Info
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.obj(p), Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		out = append(out, Info{Name: Name(strings.TrimPrefix(o.Key, s.prefix+"requests/")), Size: o.Size, ModTime: o.LastModified, ETag: o.ETag})
	}
	return out, nil
}

func (s *s3store) children(ctx context.Context) ([]string, error) {
	var out []string
	base := s.prefix + "requests/"
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base}) {
		if o.Err != nil {
			return nil, o.Err
		}
		if n := strings.TrimSuffix(strings.TrimPrefix(o.Key, base), "/"); n != "" && !strings.Contains(n, "/") {
			out = append(out, n)
		}
	}
	return out, nil
}

// sweepPartials aborts multipart uploads begun over minAge ago and never
// completed (a process that died mid-write).
func (s *s3store) sweepPartials(ctx context.Context, minAge time.Duration) (int, error) {
	n := 0
	for u := range s.c.ListIncompleteUploads(ctx, s.bucket, s.prefix+"requests/", true) {
		if u.Err != nil {
			return n, u.Err
		}
		if time.Since(u.Initiated) < minAge {
			continue
		}
		if err := s.c.RemoveIncompleteUpload(ctx, s.bucket, u.Key); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *s3store) parallel() int { return 4 }

func (s *s3store) linkFile(ctx context.Context, key string, lf *localFile) (bool, error) {
	return false, nil
}

func (s *s3store) linkOut(ctx context.Context, key, dst string) (bool, error) { return false, nil }

func (s *s3store) syncDirs(prefixKey string, members []SetMember) {}
