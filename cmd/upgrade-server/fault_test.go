package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// TestFaults injects each fault through the admin API and watches it
// through the public API.
func TestFaults(t *testing.T) {
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t), "UPGRADE_HTTP_ADDR": "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR": "127.0.0.1:0", "UPGRADE_DATA_DIR": t.TempDir(), "UPGRADE_WORKERS": "0",
		"UPGRADE_ADMIN_TOKEN": "tok",
	})
	base := s.url
	addRule := func(rule map[string]any) {
		t.Helper()
		if code, out := adminDo(t, "POST", base+"/admin/v1/faults", "tok", rule); code != 201 {
			t.Fatalf("add %v: HTTP %d %v", rule, code, out)
		}
	}
	clear := func() { adminDo(t, "DELETE", base+"/admin/v1/faults", "tok", nil) }
	id := scenarioFree(t, base)

	t.Run("latency", func(t *testing.T) {
		defer clear()
		addRule(map[string]any{"kind": "latency", "method": "status", "latency_ms": 400})
		start := time.Now()
		call(t, base, "status", id)
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Fatalf("status answered in %s despite 400 ms of latency", d)
		}
	})
	t.Run("http_error", func(t *testing.T) {
		defer clear()
		addRule(map[string]any{"kind": "http_error", "method": "create", "status": 503, "times": 1})
		resp, err := http.Get(base + "/database/v1/create?contract=c&aim=test&target=16.0&email=a@b.example&filename=x.dump")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), "SERVER:ERROR") {
			t.Fatalf("HTTP %d %s", resp.StatusCode, b)
		}
		if a := call(t, base, "status", id); len(a.Failures) != 0 {
			t.Fatalf("another method failed: %+v", a.Failures)
		}
	})
	t.Run("server_error once", func(t *testing.T) {
		defer clear()
		addRule(map[string]any{"kind": "server_error", "method": "status", "times": 1})
		if a := call(t, base, "status", id); len(a.Failures) != 1 || a.Failures[0].Reason != "SERVER:ERROR" {
			t.Fatalf("first: %+v", a.Failures)
		}
		if a := call(t, base, "status", id); len(a.Failures) != 0 {
			t.Fatalf("second: %+v", a.Failures)
		}
	})
	t.Run("probability is seedable", func(t *testing.T) {
		defer clear()
		addRule(map[string]any{"kind": "server_error", "method": "status", "probability": 0.5})
		pattern := func() string {
			adminDo(t, "PUT", base+"/admin/v1/faults/seed", "tok", map[string]any{"seed": 7})
			var b strings.Builder
			for range 24 {
				if len(call(t, base, "status", id).Failures) > 0 {
					b.WriteByte('x')
				} else {
					b.WriteByte('.')
				}
			}
			return b.String()
		}
		p1, p2 := pattern(), pattern()
		if p1 != p2 || !strings.Contains(p1, "x") || !strings.Contains(p1, ".") {
			t.Fatalf("seeded patterns differ or are constant: %s %s", p1, p2)
		}
	})
	t.Run("drop_upload", func(t *testing.T) {
		defer clear()
		fresh := scenarioFreeNoUpload(t, base)
		addRule(map[string]any{"kind": "drop_upload", "after_bytes": 100000})
		req, _ := http.NewRequest("PUT", base+"/database/v1/upload?"+fresh.Encode(), bytes.NewReader(make([]byte, 1<<20)))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("the upload got an answer: HTTP %d %s", resp.StatusCode, b)
		}
		if a := call(t, base, "status", fresh); a.Request["filesize"] != nil || a.Request["state"] != "draft" {
			t.Fatalf("after the drop: %v %v", a.Request["state"], a.Request["filesize"])
		}
	})
	t.Run("sftp_disconnect and sftp_throttle", func(t *testing.T) {
		defer clear()
		fresh := scenarioFreeNoUpload(t, base)
		signer := grant(t, base, fresh)
		addRule(map[string]any{"kind": "sftp_disconnect", "after_bytes": 200000, "times": 1})
		c, closeFn := sftpClient(t, s.sftp, "user_"+fresh.Get("request"), signer)
		f, err := c.OpenFile("db.dump", 0x2) // O_WRONLY
		if err == nil {
			_, err = f.Write(make([]byte, 2<<20))
		}
		closeFn()
		if err == nil {
			t.Fatal("2 MiB went through a session that drops after 200 kB")
		}
		addRule(map[string]any{"kind": "sftp_throttle", "rate_bytes_per_sec": 400000})
		c, closeFn = sftpClient(t, s.sftp, "user_"+fresh.Get("request"), signer)
		defer closeFn()
		f, err = c.OpenFile("db.dump", 0x2|0x200) // O_WRONLY|O_TRUNC
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := f.Write(make([]byte, 600000)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if d := time.Since(start); d < time.Second {
			t.Fatalf("600 kB at 400 kB/s took %s", d)
		}
	})
}

func scenarioFreeNoUpload(t *testing.T, base string) url.Values {
	t.Helper()
	a := call(t, base, "create", url.Values{"contract": {"M1"}, "aim": {"test"}, "target": {"16.0"},
		"email": {"qa@example.com"}, "filename": {"db.dump"}})
	return url.Values{"request": {fmt.Sprint(a.Request["id"])}, "key": {a.Request["key"].(string)}}
}

func grant(t *testing.T, base string, id url.Values) ssh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	p := url.Values{"request": id["request"], "key": id["key"], "ssh_keys": {string(ssh.MarshalAuthorizedKey(signer.PublicKey()))}}
	if a := call(t, base, "request_sftp_access", p); len(a.Failures) != 0 {
		t.Fatalf("grant: %+v", a.Failures)
	}
	return signer
}

func sftpClient(t *testing.T, addr, user string, signer ssh.Signer) (*sftp.Client, func()) {
	t.Helper()
	conn, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := sftp.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	return c, func() { c.Close(); conn.Close() }
}
