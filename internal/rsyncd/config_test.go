package rsyncd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// TestNewChecksRsync: New fails, saying what to install, without rsync
// or with an rsync that lacks the options endpoints force; and without
// host keys.
func TestNewChecksRsync(t *testing.T) {
	t.Parallel()
	signers := hostSigners(t)
	old := filepath.Join(t.TempDir(), "rsync")
	if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'rsync  version 3.2.7  protocol version 31'\necho '--munge-links  munge symlinks'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  rsyncd.Config
		want string
	}{
		{"no rsync", rsyncd.Config{HostSigners: signers, RsyncPath: "/nonexistent/rsync"}, "apt-get install rsync"},
		{"old rsync", rsyncd.Config{HostSigners: signers, RsyncPath: old}, "lacks --confine-root: rsync 3.5 or later"},
		{"no host key", rsyncd.Config{}, "no host key"},
		{"bad cipher", rsyncd.Config{HostSigners: signers, Ciphers: []string{"rot13"}}, "unsupported cipher"},
		{"bad ports", rsyncd.Config{HostSigners: signers, Ports: rsyncd.PortRange{First: 10, Last: 5}}, "port range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rsyncd.New(testLogger(t), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestOpenChecksTransfer: Open refuses a transfer without a direction, a
// key, or an existing absolute folder.
func TestOpenChecksTransfer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	file := filepath.Join(e.root, "canary")
	for name, tr := range map[string]rsyncd.Transfer{
		"no direction": {Key: e.pub, Dir: e.data},
		"no key":       {Direction: rsyncd.Upload, Dir: e.data},
		"relative dir": {Direction: rsyncd.Upload, Key: e.pub, Dir: "data"},
		"missing dir":  {Direction: rsyncd.Upload, Key: e.pub, Dir: filepath.Join(e.root, "nothing")},
		"not a folder": {Direction: rsyncd.Download, Key: e.pub, Dir: file},
	} {
		if ep, err := e.srv.Open(tr); err == nil {
			ep.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}
