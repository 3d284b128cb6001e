package app

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// TestServerCert: a self-signed certificate is made once, kept across
// starts, and made anew when the hosts it must name change.
func TestServerCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	a, err := loadServerCert("", "", dir, []string{"upgrade.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(a.cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "upgrade.example.com"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(a.Path)
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the certificate file does not parse")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatalf("SSL_CERT_FILE=%s does not verify it: %v", a.Path, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "key.pem")); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	b, err := loadServerCert("", "", dir, []string{"upgrade.example.com"})
	if err != nil || b.Fingerprint != a.Fingerprint {
		t.Fatalf("a second start made another certificate: %v", err)
	}
	c, err := loadServerCert("", "", dir, []string{"other.example.com"})
	if err != nil || c.Fingerprint == a.Fingerprint {
		t.Fatalf("a new public host kept the old certificate: %v", err)
	}
	if _, err := loadServerCert(a.Path, "", dir, nil); err == nil {
		t.Fatal("a certificate without its key was accepted")
	}
	d, err := loadServerCert(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), t.TempDir(), nil)
	if err != nil || d.Generated || d.Fingerprint != c.Fingerprint {
		t.Fatalf("operator's certificate: %+v %v", d, err)
	}
}
