package rsyncd_test

import (
	"bytes"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/upgrade-server/upgrade-server/internal/rsyncd"
)

// untouched records what lies outside the transfer folder (the test's
// root but data, and the absolute paths hostile commands name) and checks
// at the end of the test that nothing changed or appeared there.
func (e *env) untouched(extra ...string) {
	e.t.Helper()
	before := tree(e.t, e.root, "data")
	for _, p := range extra {
		if _, err := os.Lstat(p); err == nil {
			e.t.Fatalf("%s exists before the test", p)
		}
	}
	e.t.Cleanup(func() {
		if diff := cmp.Diff(before, tree(e.t, e.root, "data")); diff != "" {
			e.t.Errorf("outside the transfer folder (-before +after):\n%s", diff)
		}
		if b, err := os.ReadFile(e.canary); err != nil || string(b) != "canary\n" {
			e.t.Errorf("canary: %q, %v", b, err)
		}
		for _, p := range extra {
			if _, err := os.Lstat(p); err == nil {
				e.t.Errorf("%s appeared", p)
			}
		}
	})
}

// TestHostileCommands sends, through OpenSSH's client, command lines and
// requests that would reach outside the transfer folder, read on an
// upload endpoint or write on a download endpoint; each is refused with a
// line on stderr and a non-zero exit, and nothing changes, in the folder
// or outside. rsync runs as root here (no Credential), so that file
// permissions cannot be what stops them.
func TestHostileCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	writeFile(t, filepath.Join(e.data, "origin.sql"), []byte("select 1;\n"))
	writeFile(t, filepath.Join(e.data, "upgraded.dump", "toc.dat"), []byte("toc"))
	e.untouched("/etc/x", "/x", "/tmp/x", filepath.Join(e.root, "x"))
	inData := tree(t, e.data)
	up, down := e.open(rsyncd.Upload), e.open(rsyncd.Download)
	const recv = "rsync --server -logDtpre.iLsfxCIvu --delete-after"
	const send = "rsync --server --sender -logDtpre.LsfxCIvu --ignore-missing-args"
	for _, tt := range []struct {
		name string
		ep   *rsyncd.Endpoint
		args []string // ssh options and command
		want string   // on stderr
	}{
		{"daemon", up, []string{"odoo@127.0.0.1", "rsync --server --daemon ."}, "option --daemon is not allowed"},
		{"daemon config", up, []string{"odoo@127.0.0.1", "rsync --server --daemon --config=/tmp/x ."}, "option --daemon is not allowed"},
		{"log file", up, []string{"odoo@127.0.0.1", recv + " --log-file=/etc/x . /data/x"}, "option --log-file is not allowed"},
		{"temp dir", up, []string{"odoo@127.0.0.1", recv + " --temp-dir=/ . /data/x"}, "option --temp-dir is not allowed"},
		{"partial dir", up, []string{"odoo@127.0.0.1", recv + " --partial-dir=../.. . /data/x"}, "option --partial-dir is not allowed"},
		{"backup dir", up, []string{"odoo@127.0.0.1", recv + " --backup --backup-dir=/tmp . /data/origin.sql"}, "option --backup is not allowed"},
		{"backup dir alone", up, []string{"odoo@127.0.0.1", recv + " --backup-dir=/tmp . /data/origin.sql"}, "option --backup-dir is not allowed"},
		{"link dest", up, []string{"odoo@127.0.0.1", recv + " --link-dest=/etc . /data/x"}, "option --link-dest is not allowed"},
		{"write batch", up, []string{"odoo@127.0.0.1", recv + " --write-batch=/tmp/x . /data/x"}, "option --write-batch is not allowed"},
		{"files from", down, []string{"odoo@127.0.0.1", send + " --files-from=/etc/passwd . /data/origin.sql"}, "option --files-from is not allowed"},
		{"exclude from", down, []string{"odoo@127.0.0.1", send + " --exclude-from=/etc/shadow . /data/origin.sql"}, "option --exclude-from is not allowed"},
		{"remove source files", down, []string{"odoo@127.0.0.1", send + " --remove-source-files . /data/origin.sql"}, "option --remove-source-files is not allowed"},
		{"copy links", down, []string{"odoo@127.0.0.1", "rsync --server --sender -Llogtpre.iLsfxCIvu . /data/upgraded.dump"}, "option -L is not allowed"},
		{"relative", down, []string{"odoo@127.0.0.1", "rsync --server --sender -Rlogtpre.iLsfxCIvu . /data/upgraded.dump"}, "option -R is not allowed"},
		{"dotdot", up, []string{"odoo@127.0.0.1", recv + " . ../x"}, "path ../x is not allowed"},
		{"absolute", down, []string{"odoo@127.0.0.1", send + " . /etc/passwd"}, "path /etc/passwd is not allowed"},
		{"data dotdot", down, []string{"odoo@127.0.0.1", send + " . /data/../../etc"}, "path /data/../../etc is not allowed"},
		{"data itself", up, []string{"odoo@127.0.0.1", recv + " . /data"}, "path /data is not allowed"},
		{"sender on upload", up, []string{"odoo@127.0.0.1", send + " . /data/origin.sql"}, "upload endpoint: it only receives files"},
		{"receiver on download", down, []string{"odoo@127.0.0.1", recv + " . /data/x"}, "download endpoint: it only sends files"},
		{"id", up, []string{"odoo@127.0.0.1", "id"}, "only rsync --server commands are served here"},
		{"sh -c", down, []string{"odoo@127.0.0.1", "sh -c 'cat /etc/passwd'"}, "only rsync --server commands are served here"},
		{"quoted rsync", up, []string{"odoo@127.0.0.1", recv + ` . "/data/x"`}, `unexpected character '"'`},
		{"shell", up, []string{"-T", "odoo@127.0.0.1"}, "no shell here"},
		// OpenSSH ends a session whose forced pty is refused.
		{"pty", down, []string{"-tt", "odoo@127.0.0.1"}, "PTY allocation request failed"},
		{"sftp subsystem", down, []string{"-s", "odoo@127.0.0.1", "sftp"}, "no sftp subsystem here"},
		{"wrong user", up, []string{"root@127.0.0.1", recv + " . /data/x"}, "Permission denied (publickey)"},
		{"wrong key", up, []string{"-i", e.badKey, "odoo@127.0.0.1", recv + " . /data/x"}, "Permission denied (publickey)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := e.key
			if tt.name == "wrong key" {
				key = e.badKey
			}
			r := e.ssh(tt.ep, key, tt.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("want a non-zero exit and %q on stderr, got %s", tt.want, r)
			}
		})
	}
	if diff := cmp.Diff(inData, tree(t, e.data)); diff != "" {
		t.Errorf("the transfer folder changed (-before +after):\n%s", diff)
	}
	for _, ep := range []*rsyncd.Endpoint{up, down} {
		if res := ep.Result(); res.Sessions != 0 || res.Refused == 0 || res.OK {
			t.Errorf("Result = %+v; want no rsync run, refusals", res)
		}
	}
}

// TestForwardingRefused tries the three kinds of port forwarding OpenSSH
// asks for (-W and -L open direct-tcpip channels, -R asks for
// tcpip-forward): each is refused and the target never sees a connection.
func TestForwardingRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := e.open(rsyncd.Upload)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	reached := make(chan struct{}, 1)
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			c.Close()
			reached <- struct{}{}
		}
	}()
	to := target.Addr().String()

	if r := e.ssh(ep, e.key, "-W", to, "odoo@127.0.0.1"); r.code == 0 || !strings.Contains(r.stderr, "administratively prohibited") {
		t.Errorf("ssh -W: %s", r)
	}
	if r := e.ssh(ep, e.key, "-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:"+to, "odoo@127.0.0.1"); r.code == 0 || !strings.Contains(r.stderr, "remote port forwarding failed") {
		t.Errorf("ssh -R: %s", r)
	}

	// -L: the forward is asked for when something connects to the local
	// end, a Unix socket here (no port to race for).
	sock := filepath.Join(e.work, "fwd.sock")
	cmd := e.command("ssh", "-p", strconv.Itoa(ep.Port()), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+e.knownHosts(ep), "-o", "BatchMode=yes", "-i", e.key, "-N", "-L", sock+":"+to, "odoo@127.0.0.1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	waitFor(t, "ssh -L's local socket", 20*time.Second, func() bool {
		c, err = net.Dial("unix", sock)
		return err == nil
	})
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("the forwarded connection gave %d bytes", n)
	}
	c.Close()
	cmd.Process.Kill()
	cmd.Wait()
	if !strings.Contains(stderr.String(), "administratively prohibited") {
		t.Errorf("ssh -L stderr: %s", stderr.String())
	}
	select {
	case <-reached:
		t.Error("a forward reached the target")
	default:
	}
}

// TestHostileRsyncOptions drives the real rsync with options that reach
// the server only inside the rsync protocol or through -M (the
// server-side options), which the command line check cannot see all of:
// a dir-merge filter naming a file outside the folder is not read, a
// --chmod=u+s sent to the server still gives no setuid file, -o run as
// root does not give a file away, a FIFO is not created, and a
// --log-file sent with -M is refused.
func TestHostileRsyncOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The secret's line would exclude the file of the same name: if the
	// server read the secret, "leak-me" would be missing from the download.
	secret := filepath.Join(e.root, "secret")
	writeFile(t, secret, []byte("leak-me\n"))
	e.untouched("/etc/x")
	writeFile(t, filepath.Join(e.data, "dl", "leak-me"), []byte("x"))
	writeFile(t, filepath.Join(e.data, "dl", "other"), []byte("y"))
	down := e.open(rsyncd.Download)
	dest := filepath.Join(e.work, "dl")
	r := e.rsync(down, []string{"--filter=:- " + secret}, remote("dl/"), dest+"/")
	t.Logf("download with a dir-merge filter outside the folder: %s", r)
	if _, err := os.Stat(filepath.Join(dest, "leak-me")); err != nil {
		t.Errorf("the server read a filter file outside the transfer folder: %v", err)
	}

	up := e.open(rsyncd.Upload)
	src := filepath.Join(e.work, "up")
	writeFile(t, filepath.Join(src, "suid"), []byte("#!/bin/sh\n"))
	if err := os.Chmod(filepath.Join(src, "suid"), os.ModeSetuid|os.ModeSetgid|0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// As root, -o would give the file its sender's owner.
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(src, "suid"), 12345, 12345); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.rsync(up, []string{"-M--chmod=u+s,g+s"}, src+"/", remote("up")); r.code != 0 {
		t.Fatalf("upload: %s", r)
	}
	fi, err := os.Stat(filepath.Join(e.data, "up", "suid"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		t.Errorf("uploaded file mode %v: setuid/setgid kept", fi.Mode())
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
		t.Errorf("uploaded file owned by uid %d, not rsync's user", uid)
	}
	if _, err := os.Lstat(filepath.Join(e.data, "up", "fifo")); err == nil {
		t.Error("the upload created a FIFO")
	}

	r = e.rsync(up, []string{"-M--log-file=/etc/x"}, src+"/", remote("up2"))
	if r.code == 0 || !strings.Contains(r.stderr, "option --log-file is not allowed") {
		t.Errorf("upload with -M--log-file: %s", r)
	}
}

// TestUploadedLinks uploads a folder holding links to /etc/passwd, to
// ../.. and to /: they land munged (their targets start with
// /rsyncd-munged/, which does not exist), so none can be followed; paths
// through them are refused; and a download of the folder returns links,
// never /etc/passwd's content.
func TestUploadedLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.untouched()
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(e.work, "links")
	writeFile(t, filepath.Join(src, "file"), []byte("plain"))
	for name, target := range map[string]string{"pw": "/etc/passwd", "up": "../..", "root": "/"} {
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	up := e.open(rsyncd.Upload)
	if r := e.rsync(up, nil, src+"/", remote("links")); r.code != 0 {
		t.Fatalf("upload: %s", r)
	}
	for _, name := range []string{"pw", "up", "root"} {
		p := filepath.Join(e.data, "links", name)
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, "/rsyncd-munged/") {
			t.Errorf("%s: link to %q (%v), want a munged link", name, target, err)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s can be followed", name)
		}
	}

	// Paths through the links are refused, both ways.
	if r := e.rsync(up, nil, filepath.Join(src, "file"), remote("links/up/evil")); r.code == 0 || !strings.Contains(r.stderr, "path /data/links/up is a symbolic link") {
		t.Errorf("upload through a link: %s", r)
	}
	down := e.open(rsyncd.Download)
	dest := filepath.Join(e.work, "back")
	if r := e.rsync(down, nil, remote("links/root/etc/passwd"), dest); r.code == 0 || !strings.Contains(r.stderr, "path /data/links/root is a symbolic link") {
		t.Errorf("download through a link: %s", r)
	}
	// -L (--copy-links) would make the sender follow them.
	if r := e.rsync(down, []string{"-L"}, remote("links/"), dest+"/"); r.code == 0 || !strings.Contains(r.stderr, "option -L is not allowed") {
		t.Errorf("download with -L: %s", r)
	}

	if r := e.rsync(down, nil, remote("links/"), dest+"/"); r.code != 0 {
		t.Fatalf("download: %s", r)
	}
	filepath.WalkDir(dest, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(path); bytes.Equal(b, passwd) {
				t.Errorf("the download returned /etc/passwd as %s", path)
			}
		}
		return nil
	})
	if target, err := os.Readlink(filepath.Join(dest, "pw")); err != nil || !strings.HasPrefix(target, "/rsyncd-munged/") {
		t.Errorf("downloaded pw: link to %q (%v)", target, err)
	}
	if out, err := exec.Command("cat", filepath.Join(dest, "pw")).Output(); err == nil {
		t.Errorf("the downloaded link reads %d bytes", len(out))
	}
}
