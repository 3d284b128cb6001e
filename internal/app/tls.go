package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// serverCert is the HTTPS listener's certificate: the operator's
// (UPGRADE_TLS_CERT and UPGRADE_TLS_KEY), or one made once under
// <data>/tls and kept, self-signed for localhost, 127.0.0.1, ::1 and the
// public hosts. Generated says which; Path and Fingerprint are what a
// client needs to trust it (SSL_CERT_FILE=Path).
type serverCert struct {
	cert        tls.Certificate
	Path        string
	Fingerprint string // SHA-256 of the DER certificate, hex with colons
	Generated   bool
}

// loadServerCert loads the operator's certificate, or the generated one,
// making it (or a new one, when the hosts it must name changed) first.
func loadServerCert(certFile, keyFile, dir string, hosts []string) (*serverCert, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("UPGRADE_TLS_CERT and UPGRADE_TLS_KEY go together: set both, or neither for a self-signed certificate")
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("UPGRADE_TLS_CERT/UPGRADE_TLS_KEY: %w", err)
		}
		return &serverCert{cert: c, Path: certFile, Fingerprint: fingerprint(c.Certificate[0])}, nil
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	for _, h := range hosts {
		if h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && covers(leaf, names) && time.Now().Before(leaf.NotAfter.Add(-30*24*time.Hour)) {
			return &serverCert{cert: c, Path: certPath, Fingerprint: fingerprint(c.Certificate[0]), Generated: true}, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tls: %s: %w", certPath, err)
	}
	if err := generateCert(certPath, keyPath, names); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &serverCert{cert: c, Path: certPath, Fingerprint: fingerprint(c.Certificate[0]), Generated: true}, nil
}

func covers(c *x509.Certificate, names []string) bool {
	for _, n := range names {
		if c.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// generateCert writes a self-signed ECDSA P-256 certificate for names,
// valid ten years, key first, each written atomically.
func generateCert(certPath, keyPath string, names []string) error {
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"upgrade-server (self-signed)"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so clients can trust it as its own root (SSL_CERT_FILE)
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(p string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tls-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), perm); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}
