package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
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

// s3Sink streams into a multipart upload, which exists only once complete.
type s3Sink struct {
	pw   *io.PipeWriter
	done chan error
}

var errAborted = errors.New("files: write aborted")

func (s *s3store) create(ctx context.Context, key string) (sink, error) {
	pr, pw := io.Pipe()
	sk := &s3Sink{pw: pw, done: make(chan error, 1)}
	go func() {
		_, err := s.c.PutObject(context.WithoutCancel(ctx), s.bucket, s.obj(key), pr, -1, s.putOptions())
		pr.CloseWithError(err) // unblock a writer if the upload failed
		sk.done <- err
	}()
	return sk, nil
}

func (s *s3Sink) Write(p []byte) (int, error) { return s.pw.Write(p) }

func (s *s3Sink) commit() error {
	s.pw.Close()
	return <-s.done
}

func (s *s3Sink) abort() {
	s.pw.CloseWithError(errAborted) // the client aborts the multipart upload
	<-s.done
}

type s3Object struct {
	*minio.Object
	info Info
}

func (o *s3Object) Info() Info { return o.info }

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

func (s *s3store) putFile(ctx context.Context, key, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := s.c.PutObject(ctx, s.bucket, s.obj(key), f, st.Size(), s.putOptions()); err != nil {
		return err
	}
	f.Close()
	return os.Remove(p)
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
