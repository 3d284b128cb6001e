package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Exit(m) }

// startServe starts a server on cfg and returns where it listens.
func startServe(t *testing.T, cfg Config) Addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	go func() { done <- Serve(ctx, cfg, logger, func(a Addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
		return a
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	return Addrs{}
}

type v1Answer struct {
	Failures []struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"failures"`
	Request map[string]any `json:"request"`
}

func v1(t *testing.T, base, method string, p url.Values) v1Answer {
	t.Helper()
	resp, err := http.PostForm(base+"/database/v1/"+method, p)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a v1Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func sftpLogin(t *testing.T, addr, user string, signer gossh.Signer) (*sftp.Client, *gossh.Client) {
	t.Helper()
	conn, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := sftp.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c, conn
}

// TestTakeoverAcrossProcesses: two server processes share a database and a
// data directory. A writer on the second takes the upload over from a
// writer on the first at once, SFTP and HTTP alike: the first process
// stops its writer (closing its connection, or ending its upload
// UPLOAD:INTERRUPTED) as soon as the store tells it.
func TestTakeoverAcrossProcesses(t *testing.T) {
	t.Parallel()
	cfg := Config{HTTPAddr: "127.0.0.1:0", SFTPAddr: "127.0.0.1:0", Region: "eu1", DataDir: t.TempDir(),
		DatabaseURL: pgtest.NewSchema(t), Targets: []string{"16.0"}, SFTPAccessTTL: time.Hour, SFTPIdleTimeout: time.Minute,
		SFTPCiphers: []string{"aes128-gcm@openssh.com"}, ShutdownTimeout: 10 * time.Second, Engine: "passthrough",
		EngineTimeout: time.Hour}
	a := startServe(t, cfg)
	b := startServe(t, cfg)
	baseA, baseB := "http://"+a.HTTP.String(), "http://"+b.HTTP.String()

	create := func() url.Values {
		r := v1(t, baseA, "create", url.Values{"contract": {"M1"}, "email": {"a@example.com"}, "target": {"16.0"},
			"aim": {"test"}, "filename": {"db.dump"}})
		if len(r.Failures) > 0 {
			t.Fatalf("create: %+v", r.Failures)
		}
		return url.Values{"request": {fmt.Sprint(r.Request["id"])}, "key": {r.Request["key"].(string)}}
	}

	t.Run("sftp", func(t *testing.T) {
		id := create()
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		signer, _ := gossh.NewSignerFromKey(priv)
		p := url.Values{"request": id["request"], "key": id["key"], "ssh_keys": {string(gossh.MarshalAuthorizedKey(signer.PublicKey()))}}
		if r := v1(t, baseA, "request_sftp_access", p); len(r.Failures) > 0 {
			t.Fatalf("request_sftp_access: %+v", r.Failures)
		}
		user := "user_" + id.Get("request")
		ca, _ := sftpLogin(t, a.SFTP.String(), user, signer)
		fa, err := ca.OpenFile("db.dump", os.O_WRONLY|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fa.Write(bytes.Repeat([]byte("a"), 1<<20)); err != nil {
			t.Fatal(err)
		}
		cb, _ := sftpLogin(t, b.SFTP.String(), user, signer)
		start := time.Now()
		fb, err := cb.OpenFile("db.dump", os.O_WRONLY)
		if err != nil {
			t.Fatalf("the second process's writer could not take over: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the takeover took %s", d)
		}
		closed := make(chan error, 1)
		go func() { closed <- ca.Wait() }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the first process kept its writer's connection open")
		}
		if _, err := fa.Write([]byte("stale")); err == nil {
			t.Fatal("the replaced writer could still write")
		}
		if _, err := fb.WriteAt(bytes.Repeat([]byte("b"), 1<<20), 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := fb.Close(); err != nil {
			t.Fatal(err)
		}
		if r := v1(t, baseA, "process", id); len(r.Failures) > 0 || r.Request["filesize"] != "2.00 Mb" {
			t.Fatalf("process: %+v %v", r.Failures, r.Request["filesize"])
		}
	})

	t.Run("http", func(t *testing.T) {
		id := create()
		pr, pw := io.Pipe()
		first := make(chan v1Answer, 1)
		go func() {
			req, _ := http.NewRequest("PUT", baseA+"/database/v1/upload?"+id.Encode(), pr)
			resp, err := http.DefaultClient.Do(req)
			var ans v1Answer
			if err == nil {
				json.NewDecoder(resp.Body).Decode(&ans)
				resp.Body.Close()
			}
			first <- ans
		}()
		pw.Write(bytes.Repeat([]byte("a"), 1<<20))
		deadline := time.Now().Add(10 * time.Second)
		for v1(t, baseB, "process", id).Failures[0].Reason != "UPLOAD:IN_PROGRESS" {
			if time.Now().After(deadline) {
				t.Fatal("the first upload never started")
			}
			time.Sleep(10 * time.Millisecond)
		}
		req, _ := http.NewRequest("PUT", baseB+"/database/v1/upload?"+id.Encode(), strings.NewReader("second"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var second v1Answer
		json.NewDecoder(resp.Body).Decode(&second)
		resp.Body.Close()
		if len(second.Failures) > 0 {
			t.Fatalf("second upload: %+v", second.Failures)
		}
		select {
		case got := <-first:
			if len(got.Failures) != 1 || got.Failures[0].Reason != "UPLOAD:INTERRUPTED" || !strings.Contains(got.Failures[0].Message, "newer upload") {
				t.Fatalf("first upload: %+v", got.Failures)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the first process's upload was not stopped")
		}
		pw.Close()
		if r := v1(t, baseA, "process", id); len(r.Failures) > 0 || r.Request["filesize"] != "6.00 bytes" {
			t.Fatalf("process: %+v %v", r.Failures, r.Request["filesize"])
		}
	})
}
