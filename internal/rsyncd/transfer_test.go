package rsyncd_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// dumpDir writes a pg_dump directory archive's shape under dir: toc.dat
// and data files, one of several MiB of random bytes.
func dumpDir(t *testing.T, dir string, bigSize int) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "toc.dat"), []byte("PGDMP toc"))
	writeFile(t, filepath.Join(dir, "3001.dat.gz"), randomBytes(t, 10<<10))
	writeFile(t, filepath.Join(dir, "3002.dat.gz"), randomBytes(t, bigSize))
	writeFile(t, filepath.Join(dir, "3003.dat.gz"), nil)
}

// TestUploadFolder sends a directory dump the way the client does for
// -d DB (the folder's contents to /data/origin.dump) and finds it
// byte-identical in the transfer folder.
func TestUploadFolder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "origin.dump")
	dumpDir(t, src, 5<<20)
	if r := e.rsync(ep, nil, src+"/", remote("origin.dump")); r.code != 0 {
		t.Fatalf("rsync: %s", r)
	}
	if diff := cmp.Diff(tree(t, src), tree(t, filepath.Join(e.data, "origin.dump"))); diff != "" {
		t.Errorf("uploaded folder differs (-sent +received):\n%s", diff)
	}
	res := ep.Result()
	if res.Sessions != 1 || !res.OK || res.Exit != 0 || res.Running || res.BytesIn < 5<<20 || !slices.Equal(res.Paths, []string{"origin.dump"}) {
		t.Errorf("Result = %+v", res)
	}
}

// TestUploadFiles sends each single-file dump kind of -i FILE to its
// name, and once with the host:port form of the client's host
// (odoo@127.0.0.1:<port>:/data/origin.sql, which rsync sends as
// "<port>:/data/origin.sql").
func TestUploadFiles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, dest string }{
		{"origin.sql", "origin.sql"},
		{"origin.dump", "origin.dump"},
		{"origin.sql.gz", "origin.sql.gz"},
		{"origin.zip", "origin.zip"},
		{"host:port", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ep := e.open(rsyncd.Upload)
			name := tt.dest
			dest := remote(tt.dest)
			if tt.dest == "" {
				name = "origin.sql"
				dest = "odoo@127.0.0.1:" + strconv.Itoa(ep.Port()) + ":/data/origin.sql"
			}
			src := filepath.Join(e.work, name)
			want := randomBytes(t, 1<<20+123)
			writeFile(t, src, want)
			if r := e.rsync(ep, nil, src, dest); r.code != 0 {
				t.Fatalf("rsync: %s", r)
			}
			got, err := os.ReadFile(filepath.Join(e.data, name))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s: %d bytes received, %d sent, or different", name, len(got), len(want))
			}
			if diff := cmp.Diff([]string{name}, names(t, e.data)); diff != "" {
				t.Errorf("transfer folder (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDownload pulls what the client pulls after an upgrade, in one rsync
// with --ignore-missing-args: the dump folder, filestore/,
// upgrade-report.html and upgrade.log, the last one absent; once with
// /data/<name> paths and once with the host:port form.
func TestDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dumpDir(t, filepath.Join(e.data, "upgraded.dump"), 3<<20)
	writeFile(t, filepath.Join(e.data, "filestore", "ab", "abcdef"), randomBytes(t, 4096))
	writeFile(t, filepath.Join(e.data, "filestore", "cd", "cdef01"), []byte("attachment"))
	writeFile(t, filepath.Join(e.data, "upgrade-report.html"), []byte("<html>notes</html>"))
	want := tree(t, e.data)
	ep := e.open(rsyncd.Download)
	for _, form := range []string{"data", "host:port"} {
		t.Run(form, func(t *testing.T) {
			dest := filepath.Join(e.work, strings.ReplaceAll(form, ":", "-"))
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			var operands []string
			for _, n := range []string{"upgraded.dump", "filestore", "upgrade-report.html", "upgrade.log"} {
				if form == "data" {
					operands = append(operands, remote(n))
				} else {
					operands = append(operands, "odoo@127.0.0.1:8443:/data/"+n)
				}
			}
			operands = append(operands, dest+"/")
			if r := e.rsync(ep, []string{"--ignore-missing-args"}, operands...); r.code != 0 {
				t.Fatalf("rsync: %s", r)
			}
			if diff := cmp.Diff(want, tree(t, dest)); diff != "" {
				t.Errorf("downloaded files differ (-server +client):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff(want, tree(t, e.data)); diff != "" {
		t.Errorf("the download changed the transfer folder:\n%s", diff)
	}
	if res := ep.Result(); res.Sessions != 2 || !res.OK || res.BytesOut < 3<<20 {
		t.Errorf("Result = %+v", res)
	}
}

// TestKnownHosts checks the known_hosts text's shape, and that OpenSSH's
// StrictHostKeyChecking=yes accepts it and refuses another key.
func TestKnownHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	port := strconv.Itoa(ep.Port())
	for host, prefix := range map[string]string{
		"127.0.0.1":            "[127.0.0.1]:" + port + " ",
		"Upgrade.Example":      "[upgrade.example]:" + port + " ",
		"upgrade.example:8443": "[upgrade.example]:" + port + " ",
		"::1":                  "[::1]:" + port + " ",
		"[::1]:8443":           "[::1]:" + port + " ",
	} {
		lines := strings.Split(strings.TrimSuffix(ep.KnownHosts(host), "\n"), "\n")
		if len(lines) != 2 {
			t.Errorf("KnownHosts(%q) = %q, want two lines", host, lines)
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, prefix) || len(strings.Fields(l)) != 3 {
				t.Errorf("KnownHosts(%q) line %d = %q, want %q, a key type and the key", host, i, l, prefix+"…")
			}
		}
	}
	src := filepath.Join(e.work, "origin.sql")
	writeFile(t, src, []byte("select 1;\n"))
	if r := e.rsync(ep, nil, src, remote("origin.sql")); r.code != 0 {
		t.Fatalf("rsync with the endpoint's known_hosts: %s", r)
	}

	// Another server's keys under the same name.
	other := newEnv(t)
	oep := other.open(rsyncd.Upload)
	wrong := strings.ReplaceAll(oep.KnownHosts("127.0.0.1"), "]:"+strconv.Itoa(oep.Port())+" ", "]:"+port+" ")
	kh := filepath.Join(e.work, "wrong_known_hosts")
	writeFile(t, kh, []byte(wrong))
	r := e.run("rsync", "-are", "ssh -p "+port+" -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="+kh+" -i "+e.key,
		src, remote("origin2.sql"))
	if r.code == 0 || !strings.Contains(r.stderr, "Host key verification failed") {
		t.Errorf("rsync with another host key: %s", r)
	}
	if _, err := os.Stat(filepath.Join(e.data, "origin2.sql")); err == nil {
		t.Error("the upload with the wrong host key landed")
	}
}

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
