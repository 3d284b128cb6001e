package rsyncd

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The lines the real client's rsync (3.5.0) sends, captured with -e
// pointing at a script that logs its arguments, for the reference's
// commands (upload of a folder and of a file, the host:port form, the
// download with --ignore-missing-args).
const (
	clientUploadDir   = "rsync --server -logDtpre.iLsfxCIvu --delete-after . /data/origin.dump"
	clientUploadSlash = "rsync --server -logDtpre.iLsfxCIvu --delete-after . /data/origin.dump/"
	clientUploadFile  = "rsync --server -logDtpre.iLsfxCIvu --delete-after . /data/origin.sql"
	clientUploadPort  = "rsync --server -logDtpre.iLsfxCIvu --delete-after . 2222:/data/origin.sql"
	clientDownload    = "rsync --server --sender -logDtpre.LsfxCIvu --ignore-missing-args . /data/upgraded.dump /data/filestore /data/upgrade-report.html /data/upgrade.log"
	clientDownloadPrt = "rsync --server --sender -logDtpre.LsfxCIvu --ignore-missing-args . 4000:/data/upgraded.dump 4000:/data/filestore"
)

func TestParseCommandAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		dir  Direction
		want command
	}{
		{"upload folder", clientUploadDir, Upload, command{opts: []string{"-logDtpre.iLsfxCIvu", "--delete-after"}, paths: []string{"origin.dump"}}},
		{"upload folder slash", clientUploadSlash, Upload, command{opts: []string{"-logDtpre.iLsfxCIvu", "--delete-after"}, paths: []string{"origin.dump/"}}},
		{"upload file", clientUploadFile, Upload, command{opts: []string{"-logDtpre.iLsfxCIvu", "--delete-after"}, paths: []string{"origin.sql"}}},
		{"upload host:port", clientUploadPort, Upload, command{opts: []string{"-logDtpre.iLsfxCIvu", "--delete-after"}, paths: []string{"origin.sql"}}},
		{"download", clientDownload, Download, command{sender: true, opts: []string{"--sender", "-logDtpre.LsfxCIvu", "--ignore-missing-args"},
			paths: []string{"upgraded.dump", "filestore", "upgrade-report.html", "upgrade.log"}}},
		{"download host:port", clientDownloadPrt, Download, command{sender: true, opts: []string{"--sender", "-logDtpre.LsfxCIvu", "--ignore-missing-args"},
			paths: []string{"upgraded.dump", "filestore"}}},
		// rsync 3.1 (Ubuntu 20.04) and 2.6.9 (old macOS) bundles, -v, and
		// the harmless long options.
		{"rsync 3.1", "rsync --server -logDtpre.iLsfxC --delete-after . /data/origin.sql", Upload, command{opts: []string{"-logDtpre.iLsfxC", "--delete-after"}, paths: []string{"origin.sql"}}},
		{"rsync 2.6.9", "rsync --server -logDtpr --delete-after . /data/origin.sql", Upload, command{opts: []string{"-logDtpr", "--delete-after"}, paths: []string{"origin.sql"}}},
		{"verbose", "rsync --server -vlogDtpre.iLsfxCIvu --delete-after . /data/a/b.dat", Upload, command{opts: []string{"-vlogDtpre.iLsfxCIvu", "--delete-after"}, paths: []string{"a/b.dat"}}},
		{"info chmod bwlimit", "rsync --server -logDtpre.iLsfxCIvu --info=progress2,stats --chmod=u+rwx,g+rwx,o+r --bwlimit=500 . /data/origin.zip", Upload,
			command{opts: []string{"-logDtpre.iLsfxCIvu", "--info=progress2,stats", "--chmod=u+rwx,g+rwx,o+r", "--bwlimit=500"}, paths: []string{"origin.zip"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseCommand(tt.line, tt.dir)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if diff := cmp.Diff(tt.want, *got, cmp.AllowUnexported(command{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCommandRefuses(t *testing.T) {
	t.Parallel()
	const up = "rsync --server -logDtpre.iLsfxCIvu --delete-after"
	const down = "rsync --server --sender -logDtpre.LsfxCIvu --ignore-missing-args"
	tests := []struct {
		name    string
		line    string
		dir     Direction
		wantMsg string // part of the refusal
	}{
		{"not rsync", "id", Upload, "only rsync --server"},
		{"shell", "sh -c id", Upload, "only rsync --server"},
		{"rsync client mode", "rsync -a /etc/passwd /data/x", Upload, "only rsync --server"},
		{"other rsync path", "/tmp/rsync --server -logDtpr . /data/x", Upload, "only rsync --server"},
		{"empty", "", Upload, "only rsync --server"},
		{"quote", up + ` . "/data/x"`, Upload, "unexpected character '\"'"},
		{"semicolon", up + ` . /data/x;id`, Upload, "unexpected character ';'"},
		{"backslash", up + ` . /data/a\ b`, Upload, `unexpected character '\\'`},
		{"glob", "rsync --server --sender -logDtpr . /data/*", Download, "unexpected character '*'"},
		{"dollar", up + ` . /data/$HOME`, Upload, "unexpected character '$'"},
		{"newline", up + " . /data/x\nid", Upload, `unexpected character '\n'`},
		{"double space", "rsync --server  -logDtpr . /data/x", Upload, "empty argument"},
		{"daemon", "rsync --server --daemon .", Upload, "option --daemon is not allowed"},
		{"log file", up + " --log-file=/etc/x . /data/x", Upload, "option --log-file is not allowed"},
		{"temp dir", up + " --temp-dir=/ . /data/x", Upload, "option --temp-dir is not allowed"},
		{"partial dir", up + " --partial-dir=../.. . /data/x", Upload, "option --partial-dir is not allowed"},
		{"partial", up + " --partial . /data/x", Upload, "option --partial is not allowed"},
		{"backup", up + " --backup . /data/x", Upload, "option --backup is not allowed"},
		{"backup dir", up + " --backup-dir=/tmp . /data/x", Upload, "option --backup-dir is not allowed"},
		{"files from", down + " --files-from=/etc/passwd . /data/x", Download, "option --files-from is not allowed"},
		{"include from", down + " --include-from=/etc/shadow . /data/x", Download, "option --include-from is not allowed"},
		{"exclude from", down + " --exclude-from=/etc/shadow . /data/x", Download, "option --exclude-from is not allowed"},
		{"write batch", up + " --write-batch=/tmp/b . /data/x", Upload, "option --write-batch is not allowed"},
		{"read batch", up + " --read-batch=/tmp/b . /data/x", Upload, "option --read-batch is not allowed"},
		{"only write batch", up + " --only-write-batch=/tmp/b . /data/x", Upload, "option --only-write-batch is not allowed"},
		{"remove source files", down + " --remove-source-files . /data/x", Download, "option --remove-source-files is not allowed"},
		{"link dest", up + " --link-dest=/etc . /data/x", Upload, "option --link-dest is not allowed"},
		{"copy dest", up + " --copy-dest=/etc . /data/x", Upload, "option --copy-dest is not allowed"},
		{"compare dest", up + " --compare-dest=/etc . /data/x", Upload, "option --compare-dest is not allowed"},
		{"rsync path", up + " --rsync-path=/bin/sh . /data/x", Upload, "option --rsync-path is not allowed"},
		{"config", "rsync --server --config=/tmp/x --daemon .", Upload, "option --config is not allowed"},
		{"relative long", down + " --relative . /data/x", Download, "option --relative is not allowed"},
		{"copy links long", down + " --copy-links . /data/x", Download, "option --copy-links is not allowed"},
		{"copy unsafe links", down + " --copy-unsafe-links . /data/x", Download, "option --copy-unsafe-links is not allowed"},
		{"no munge links", up + " --no-munge-links . /data/x", Upload, "option --no-munge-links is not allowed"},
		{"super", up + " --super . /data/x", Upload, "option --super is not allowed"},
		{"filter", down + " --filter=merge_/etc/passwd . /data/x", Download, "option --filter is not allowed"},
		{"confine root", up + " --confine-root=/ . /data/x", Upload, "option --confine-root is not allowed"},
		{"insecure links", down + " --insecure-links . /data/x", Download, "option --insecure-links is not allowed"},
		{"R", "rsync --server -logDtpRre.iLsfxCIvu . /data/x", Upload, "option -R is not allowed"},
		{"L", "rsync --server --sender -Llogtpre.iLsfxCIvu . /data/x", Download, "option -L is not allowed"},
		{"k", "rsync --server --sender -klogtpre.iLsfxCIvu . /data/x", Download, "option -k is not allowed"},
		{"K", "rsync --server -Klogtpre.iLsfxCIvu . /data/x", Upload, "option -K is not allowed"},
		{"secluded args", "rsync --server -slogDtpre.iLsfxCIvu", Upload, "option -s"},
		{"bad caps", "rsync --server -logDtpre/x . /data/x", Upload, "option -e is not allowed"},
		{"caps without dot", "rsync --server -logDtpreiLsf . /data/x", Upload, "option -e is not allowed"},
		{"bare dash", "rsync --server - . /data/x", Upload, "argument - is not allowed"},
		{"double dash", "rsync --server -logDtpr -- . /data/x", Upload, "option -- is not allowed"},
		{"bad chmod", up + " --chmod=u+rwx:x . /data/x", Upload, "option --chmod: value not allowed"},
		{"info without value", up + " --info . /data/x", Upload, "option --info is not allowed"},
		{"delete after on download", down + " --delete-after . /data/x", Download, "option --delete-after is not allowed"},
		{"ignore missing on upload", up + " --ignore-missing-args . /data/x", Upload, "option --ignore-missing-args is not allowed"},
		{"delete", up + " --delete . /data/x", Upload, "option --delete is not allowed"},
		{"sender on upload", "rsync --server --sender -logDtpre.iLsfxCIvu . /data/origin.sql", Upload, "only receives files"},
		{"receiver on download", up + " . /data/origin.sql", Download, "only sends files"},
		{"no dot", up + " /data/x", Upload, "argument /data/x is not allowed before the path"},
		{"options only", up, Upload, "no path"},
		{"no path", up + " .", Upload, "no path"},
		{"two upload paths", up + " . /data/a /data/b", Upload, "one destination"},
		{"dotdot", up + " . ../x", Upload, "path ../x is not allowed"},
		{"etc passwd", down + " . /etc/passwd", Download, "path /etc/passwd is not allowed"},
		{"data dotdot", down + " . /data/../../etc", Download, "path /data/../../etc is not allowed"},
		{"data dot", down + " . /data/./x", Download, "is not allowed"},
		{"data double slash", down + " . /data//x", Download, "is not allowed"},
		{"data itself", up + " . /data", Upload, "path /data is not allowed"},
		{"data slash", up + " . /data/", Upload, "name a file or folder under /data"},
		{"data itself download", down + " . /data/", Download, "name a file or folder under /data"},
		{"relative path", up + " . origin.sql", Upload, "path origin.sql is not allowed"},
		{"data prefix lookalike", up + " . /database/x", Upload, "is not allowed"},
		{"port not digits", up + " . host:/data/x", Upload, "is not allowed"},
		{"two colons", up + " . 1:2:/data/x", Upload, "is not allowed"},
		{"colon inside", up + " . /data/a:b", Upload, "is not allowed"},
		{"too many paths", down + " ." + strings.Repeat(" /data/x", maxPaths+1), Download, "too many paths"},
		{"too long", up + " . /data/" + strings.Repeat("x", maxCommandLen), Upload, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseCommand(tt.line, tt.dir)
			var r *refusal
			if !errors.As(err, &r) {
				t.Fatalf("parseCommand = %+v, %v; want a refusal", got, err)
			}
			if !strings.Contains(r.msg, tt.wantMsg) {
				t.Errorf("refusal %q does not contain %q", r.msg, tt.wantMsg)
			}
		})
	}
}
