package security_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/app"
	"github.com/upgrade-server/upgrade-server/internal/odooclient"
)

// newOdooServer starts a whole server with what Odoo's upgrade script
// needs (HTTPS, rsync endpoints); mod changes more settings.
func newOdooServer(t *testing.T, mod func(*app.Config)) *client {
	t.Helper()
	for _, tool := range []string{"rsync", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test: %v", tool, err)
		}
	}
	return newClientWith(t, func(cfg *app.Config) {
		cfg.HTTPSAddr = "127.0.0.1:0"
		if mod != nil {
			mod(cfg)
		}
	})
}

// odoo is a new run of Odoo's upgrade script against c's server.
func (c *client) odoo() *odooclient.Client {
	c.t.Helper()
	oc, err := odooclient.New(c.srv.URL, c.addrs.CertPath, c.t.TempDir())
	if err != nil {
		c.t.Fatal(err)
	}
	return oc
}

// uploadDir is where request id's rsync upload lands: the work folder in
// the data directory, or the engine's in the system's temporary directory
// when the tools user cannot reach the data directory (as in tests run as
// root in private temporary folders).
func (c *client) uploadDir(id int64) string {
	work := filepath.Join(c.srv.DataDir, "work")
	name := fmt.Sprintf("transfer-%d-upload", id)
	if _, err := os.Stat(filepath.Join(work, name)); err == nil {
		return filepath.Join(work, name)
	}
	sum := sha256.Sum256([]byte(work))
	return filepath.Join(os.TempDir(), "upgrade-server-work-"+hex.EncodeToString(sum[:6]), name)
}

// TestRPCEnvVarsThatRunCode: env_vars reach the command engine, which
// runs the operator's command as the tools user against the hostile
// database. A variable that makes a tool the command runs read a file as
// commands (psql's PSQLRC: "\!" lines run programs) would let the
// request run code of its own there, from a file the upload put in the
// run's folder (an Odoo backup's filestore). Such variables are refused;
// were one accepted, its file must not run.
func TestRPCEnvVarsThatRunCode(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql is needed for this test: %v", err)
	}
	c := newOdooServer(t, func(cfg *app.Config) {
		cfg.Engine = "command"
		cfg.EngineCommand = `psql -At -c "SELECT 'operator command ran'"`
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Refused at create, each of them (a client's variable must not
	// choose a start-up or configuration file, or a program, of the tools
	// the command may run).
	for _, kv := range []string{"PSQLRC=filestore/0a/rc", "psqlrc=x", "PSQL_EDITOR=x", "PSQL_PAGER=x", "PAGER=x",
		"EDITOR=x", "VISUAL=x", "OPENERP_SERVER=x", "KRB5_CONFIG=x", "KRB5CCNAME=x", "LDAPCONF=x", "LDAPRC=x",
		"XDG_CONFIG_HOME=x", "JDK_JAVA_OPTIONS=x", "ZDOTDIR=x", "LUA_INIT=x"} {
		oc := c.odoo()
		var er *odooclient.ErrorResult
		if _, err := oc.Create(ctx, "M-security", "16.0", "test", []string{kv}); !errors.As(err, &er) ||
			!strings.Contains(er.Message, "may not be set") {
			t.Errorf("create with env_vars %s: %v, want a refusal", kv, err)
		}
	}

	// End to end: the variable and a file for it in the upload.
	payload := `\! echo "PSQLRC-PAYLOAD-RAN uid=$(id -u)"` + "\n"
	zipped := withMember(t, fixture(t, "odoo12.odoo-backup.zip"), "filestore/0a/rc", payload)
	src := filepath.Join(t.TempDir(), "origin.zip")
	if err := os.WriteFile(src, zipped, 0o644); err != nil {
		t.Fatal(err)
	}
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", []string{"PSQLRC=filestore/0a/rc"}); err != nil {
		return // refused, as checked above
	}
	if _, err := oc.Upload(ctx, src, "origin.zip"); err != nil {
		t.Fatal(err)
	}
	if st, err := oc.Wait(ctx, 50*time.Millisecond, nil); err != nil {
		t.Fatalf("wait: %v %v", st, err)
	}
	log := strings.Join(c.events(oc.RequestID), "\n")
	if !strings.Contains(log, "operator command ran") {
		t.Fatalf("the operator's command did not run:\n%s", log)
	}
	if strings.Contains(log, "PSQLRC-PAYLOAD-RAN") {
		t.Errorf("the upload's file ran as psql's start-up file:\n%s", log)
	}
}

// withMember returns the zip z with one more member.
func withMember(t *testing.T, z []byte, name, content string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range zr.File {
		if err := zw.Copy(f); err != nil {
			t.Fatal(err)
		}
	}
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, content)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRPCTransferStartRace: transfer/start calls for one request at once
// leave one endpoint listening; the others are refused or replaced, never
// left open outside the server's count (each is a listener, and the count
// is what caps them).
func TestRPCTransferStartRace(t *testing.T) {
	t.Parallel()
	c := newOdooServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oc := c.odoo()
	if _, err := oc.Create(ctx, "M-security", "16.0", "test", nil); err != nil {
		t.Fatal(err)
	}
	const n = 12
	ports := make(chan int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			res, err := oc.Call(ctx, "transfer/start", map[string]any{"token": oc.Token, "transfer_type": "upload"})
			if p, ok := res["ssh_port"].(float64); err == nil && ok {
				ports <- int(p)
			}
		})
	}
	close(start)
	wg.Wait()
	close(ports)
	var open []int
	answered := 0
	for p := range ports {
		answered++
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 2*time.Second); err == nil {
			conn.Close()
			open = append(open, p)
		}
	}
	if answered == 0 || len(open) != 1 {
		t.Fatalf("%d transfer/start answered a port; %d of them still listen (%v), want exactly one", answered, len(open), open)
	}
	if err := oc.Stop(ctx); err == nil || !strings.Contains(err.Error(), "No rsync reached") {
		t.Errorf("transfer/stop: %v", err)
	}
}
