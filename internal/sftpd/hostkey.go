package sftpd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"
)

// hostKeyFiles are generated once under <data>/ssh and never regenerated:
// ed25519 for current clients, ECDSA P-256 for older ones.
var hostKeyFiles = []struct {
	name string
	gen  func() (crypto.Signer, error)
}{
	{"ssh_host_ed25519_key", func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
	{"ssh_host_ecdsa_key", func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}},
}

// LoadHostKeys reads the host keys in dir, creating the missing ones.
func LoadHostKeys(dir string) ([]gossh.Signer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sftpd: host keys: %w", err)
	}
	var signers []gossh.Signer
	for _, hk := range hostKeyFiles {
		path := filepath.Join(dir, hk.name)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			b, err = generateHostKey(path, hk.gen)
		}
		if err != nil {
			return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
		}
		s, err := gossh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// generateHostKey writes a new key atomically (temp file, fsync, rename),
// so a crash never leaves a half-written key.
func generateHostKey(path string, gen func() (crypto.Signer, error)) ([]byte, error) {
	k, err := gen()
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(k, "upgrade-server host key")
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(block)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hostkey-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		// Another process created it first: use theirs.
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, err
	}
	return b, nil
}

// Fingerprints returns "<type> SHA256:…" for each host key, as ssh-keygen -l
// prints them, so users can pin them.
func Fingerprints(signers []gossh.Signer) []string {
	out := make([]string, len(signers))
	for i, s := range signers {
		out[i] = s.PublicKey().Type() + " " + gossh.FingerprintSHA256(s.PublicKey())
	}
	return out
}
