package security_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/app"
)

const sftpLimit = 1 << 20

func limited(c *app.Config) { c.MaxUploadBytes = sftpLimit }

// TestSFTPSparseGiant: a 1-byte write at offset 8 GiB and a truncation to
// 16 GiB are refused under UPGRADE_MAX_UPLOAD_BYTES: no sparse giant
// "upload" for process to hash.
func TestSFTPSparseGiant(t *testing.T) {
	t.Parallel()
	c := newClientWith(t, limited)
	r := c.create("db.dump")
	k := c.grantSFTP(r)
	s := c.sftpClient(r, k)
	f, err := s.OpenFile("db.dump", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 8<<30); err == nil {
		t.Error("a write at 8 GiB was accepted")
	}
	if err := f.Truncate(16 << 30); err == nil {
		t.Error("a truncation to 16 GiB through the handle was accepted")
	}
	f.Close()
	if err := s.Truncate("db.dump", 16<<30); err == nil {
		t.Error("a truncation to 16 GiB was accepted")
	}
	if st, err := os.Stat(filepath.Join(c.srv.DataDir, "staging", jsonID(r), "upload")); err != nil || st.Size() > sftpLimit {
		t.Fatalf("the shared file: %v, %v", st.Size(), err)
	}
	if a := c.call("process", auth(r)); len(a.Failures) != 1 || a.Failures[0].Reason != "UPLOAD:MISSING" {
		t.Fatalf("process after the refused writes: %+v", a.Failures)
	}
	// Within the limit, all is well.
	f, err = s.OpenFile("db.dump", os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, sftpLimit)); err != nil {
		t.Fatalf("a write up to the limit: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if a := c.call("process", auth(r)); len(a.Failures) != 0 {
		t.Fatalf("process of an upload at the limit: %+v", a.Failures)
	}
}

// TestSFTPPutOverTheLimit: OpenSSH's put of a file over the limit fails,
// the user is told why, and nothing counts as uploaded.
func TestSFTPPutOverTheLimit(t *testing.T) {
	t.Parallel()
	c := newClientWith(t, limited)
	r := c.create("db.dump")
	k := c.grantSFTP(r)
	src := filepath.Join(t.TempDir(), "big.dump")
	if err := os.WriteFile(src, make([]byte, 3*sftpLimit), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := c.openssh("sftp", r, k, "put "+src+" db.dump\n")
	if err == nil {
		t.Fatalf("put of 3 MiB under a 1 MiB limit succeeded:\n%s", out)
	}
	if !strings.Contains(out, "limit of 1048576 bytes") {
		t.Fatalf("the user is not told about the limit:\n%s", out)
	}
	if st, err := os.Stat(filepath.Join(c.srv.DataDir, "staging", jsonID(r), "upload")); err != nil || st.Size() > sftpLimit {
		t.Fatalf("the shared file: %v, %v", st.Size(), err)
	}
	if a := c.call("process", auth(r)); len(a.Failures) != 1 || a.Failures[0].Reason != "UPLOAD:MISSING" {
		t.Fatalf("process after the refused put: %+v", a.Failures)
	}
}
