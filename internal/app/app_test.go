package app

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDerivePublicURL(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:8080": "http://localhost:8080", "[::]:8080": "http://localhost:8080",
		"127.0.0.1:9": "http://127.0.0.1:9", "[::1]:80": "http://[::1]:80", "192.0.2.7:8080": "http://192.0.2.7:8080",
	} {
		if got := derivePublicURL(fakeAddr(addr)); got != want {
			t.Errorf("derivePublicURL(%s) = %s, want %s", addr, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

func TestContracts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "contracts")
	os.WriteFile(path, []byte("# valid contracts\nM1\n\n M2 \n"), 0o600)
	for _, spec := range []string{"M1,M2", "@" + path} {
		valid, n, err := contractChecker(spec)
		if err != nil || n != 2 || !valid("M1") || !valid("M2") || valid("M3") {
			t.Errorf("%s: n=%d err=%v", spec, n, err)
		}
	}
	if valid, _, err := contractChecker(""); valid != nil || err != nil {
		t.Error("unset contracts must accept any")
	}
	if _, _, err := contractChecker("@/nonexistent"); err == nil {
		t.Error("a missing contracts file must fail")
	}
}
