package engine_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/upgrade-server/upgrade-server/internal/dump"
	"github.com/upgrade-server/upgrade-server/internal/engine"
	"github.com/upgrade-server/upgrade-server/internal/files"
)

// dirDump is the folder pg_dump --format=directory wrote for a fixture (the
// committed tar of it, from make-fixtures.sh), as name -> content.
func dirDump(t *testing.T, fixture string) map[string][]byte {
	t.Helper()
	f, err := os.Open(fixtures + fixture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[path.Base(h.Name)] = b
		}
	}
}

// setJob stores content as a request's upload set, as the rsync transport
// does: a staged folder committed with CommitDir.
func (e *env) setJob(content map[string][]byte, target string, output engine.Output) engine.Job {
	e.t.Helper()
	nextID.Lock()
	nextID.n++
	id := nextID.n
	nextID.Unlock()
	dir := e.t.TempDir()
	for name, b := range content {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
	upload := files.SetName(string(files.NewUploadName()))
	if _, err := e.files.CommitDir(context.Background(), id, upload, dir, 0); err != nil {
		e.t.Fatal(err)
	}
	return engine.Job{ID: id, Attempt: 1, Target: target, Aim: "test", Filename: "origin.dump", Upload: upload, Output: output}
}

// restoreDir materializes a request's set and restores it with pg_restore
// --format=directory into a new database; it returns a connection to it.
func (e *env) restoreDir(t *testing.T, id int64, set files.Name) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "upgraded.dump")
	if err := e.files.Materialize(ctx, id, set, dir); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	check := "upgrade_check_" + strings.ToLower(strings.NewReplacer("/", "_", " ", "_", ".", "_", "-", "_").Replace(t.Name()))
	admin.Exec(ctx, "DROP DATABASE IF EXISTS "+check)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+check); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, e.url); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+check+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	cfg, _ := pgx.ParseConfig(e.url)
	cfg.Database = check
	cfg.RuntimeParams = map[string]string{}
	cmd := exec.Command("pg_restore", "--no-owner", "--format", "d", "-d", check, dir)
	cmd.Env = append(os.Environ(), "PGHOST="+cfg.Host, "PGPORT="+itoa(int(cfg.Port)), "PGUSER="+cfg.User, "PGPASSWORD="+cfg.Password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_restore --format d of the result: %v %s", err, out)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// TestDirectorySet: a folder from pg_dump --format=directory, uploaded as
// a set, runs through the builtin engine; the result is a directory-format
// dump (the set files.UpgradedDir, no archive) that pg_restore --format d
// restores at the target version, and both read as SQL.
func TestDirectorySet(t *testing.T) {
	e := newEnv(t, engine.Config{})
	ctx := context.Background()
	for name, output := range map[string]engine.Output{"directory": engine.OutputDirectory, "as uploaded": engine.OutputAsUploaded} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			j := e.setJob(dirDump(t, "odoo12.dir.tar"), "16.0", output)
			var inspected dump.Info
			res, err := e.eng.Run(ctx, j, engine.Hooks{Inspected: func(i dump.Info) error { inspected = i; return nil }})
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if inspected.DatabaseVersion != "12.0" || !slices.Equal(inspected.Compressions, []string{"pgdmp_directory", "sql"}) {
				t.Fatalf("inspected %+v", inspected)
			}
			st, err := e.files.Stat(ctx, j.ID, files.UpgradedDir)
			if err != nil || st.Size == 0 || res.UpgradedSize != st.Size {
				t.Fatalf("upgraded set %+v (%v), result %+v", st, err, res)
			}
			for _, absent := range []files.Name{files.UpgradedArchive, files.FilestoreSet} {
				if _, err := e.files.Stat(ctx, j.ID, absent); !errors.Is(err, files.ErrNotExist) {
					t.Errorf("%s: %v", absent, err)
				}
			}
			set, err := e.files.OpenSet(ctx, j.ID, files.UpgradedDir)
			if err != nil {
				t.Fatal(err)
			}
			after, err := dump.InspectFS(set, dump.Limits{})
			if err != nil || after.DatabaseVersion != "16.0" || !after.Neutralized || after.DatabaseUUID != inspected.DatabaseUUID {
				t.Fatalf("upgraded: %+v %v", after, err)
			}
			conn := e.restoreDir(t, j.ID, files.UpgradedDir)
			var base string
			var partners int
			conn.QueryRow(ctx, `SELECT latest_version FROM ir_module_module WHERE name = 'base'`).Scan(&base)
			conn.QueryRow(ctx, `SELECT count(*) FROM res_partner`).Scan(&partners)
			if base != "16.0.1.3" || partners != 300 {
				t.Fatalf("restored: base %q, %d partners", base, partners)
			}
			for name, want := range map[files.Name]string{j.Upload: "12.0.1.3", files.UpgradedDir: "16.0.1.3"} {
				rc, err := e.eng.OpenSQL(ctx, j.ID, name, inspected.Compressions)
				if err != nil {
					t.Fatal(err)
				}
				sql, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !strings.Contains(string(sql), want) || !strings.Contains(string(sql), "CREATE TABLE public.res_partner") {
					t.Fatalf("%s as SQL: %d bytes, %v", name, len(sql), err)
				}
			}
		})
	}
	t.Cleanup(func() { assertNoScratch(t, e) })
}

// TestDirectoryOutput: uploads that are files, asked for a directory: the
// result is files.UpgradedDir, with an Odoo backup's filestore as
// files.FilestoreSet.
func TestDirectoryOutput(t *testing.T) {
	e := newEnv(t, engine.Config{})
	ctx := context.Background()
	for _, f := range []string{"odoo12.custom.dump", "odoo12.odoo-backup.zip", "odoo12.dir.zip"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			j := e.job(f, "16.0", "production")
			j.Output = engine.OutputDirectory
			if _, err := e.run(j); err != nil {
				t.Fatalf("run: %v", err)
			}
			if _, err := e.files.Stat(ctx, j.ID, files.UpgradedArchive); !errors.Is(err, files.ErrNotExist) {
				t.Errorf("an archive was made too: %v", err)
			}
			var base string
			e.restoreDir(t, j.ID, files.UpgradedDir).QueryRow(ctx, `SELECT latest_version FROM ir_module_module WHERE name = 'base'`).Scan(&base)
			if base != "16.0.1.3" {
				t.Fatalf("base %q", base)
			}
			fs, err := e.files.OpenSet(ctx, j.ID, files.FilestoreSet)
			if f != "odoo12.odoo-backup.zip" {
				if !errors.Is(err, files.ErrNotExist) {
					t.Fatalf("a filestore without one in the upload: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range fs.Members() {
				names = append(names, m.Name)
			}
			if strings.Join(names, ",") != "0a/0a1b2c3d4e5f60718293a4b5c6d7e8f901234567,9f/9f8e7d6c5b4a39281706f5e4d3c2b1a098765432" {
				t.Fatalf("filestore %v", names)
			}
			o, err := fs.OpenMember(names[1])
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(o)
			o.Close()
			if string(b) != "hello notes" {
				t.Fatalf("filestore file %q", b)
			}
		})
	}
}

// renameData rewrites, in a toc.dat, the data file name from as to (a
// string of the archive: a sign byte, a 4-byte length, the bytes).
func renameData(t *testing.T, toc []byte, from, to string) []byte {
	t.Helper()
	str := func(s string) []byte {
		b := []byte{0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], uint32(len(s)))
		return append(b, s...)
	}
	out := bytes.Replace(toc, str(from), str(to), 1)
	if bytes.Equal(out, toc) {
		t.Fatalf("%s is not in toc.dat", from)
	}
	return out
}

// TestDirectorySetHostile: a set whose toc.dat reaches outside it, or that
// lacks a file toc.dat names, fails with a customer's reason; files toc.dat
// does not name are never read.
func TestDirectorySetHostile(t *testing.T) {
	e := newEnv(t, engine.Config{})
	var ce *engine.CustomerError
	content := dirDump(t, "odoo12.dir.tar")
	content["toc.dat"] = renameData(t, content["toc.dat"], "3420.dat", "../../etc/passwd")
	if _, err := e.run(e.setJob(content, "16.0", engine.OutputDirectory)); !errors.As(err, &ce) ||
		!strings.Contains(ce.Message, "not a pg_dump data file name") || !strings.Contains(ce.Message, "../../etc/passwd") {
		t.Fatalf("toc.dat naming ../../etc/passwd: %v", err)
	}
	content = dirDump(t, "odoo12.dir.tar")
	delete(content, "3420.dat.gz")
	if _, err := e.run(e.setJob(content, "16.0", engine.OutputDirectory)); !errors.As(err, &ce) || !strings.Contains(ce.Message, "lacks 3420.dat") {
		t.Fatalf("a missing data file: %v", err)
	}
	content = dirDump(t, "odoo12.dir.tar")
	content["toc.dat"] = content["toc.dat"][:len(content["toc.dat"])/2]
	if _, err := e.run(e.setJob(content, "16.0", engine.OutputDirectory)); !errors.As(err, &ce) {
		t.Fatalf("a truncated toc.dat: %v", err)
	}
	// Extra files, even ones that are no dump, are ignored.
	content = dirDump(t, "odoo12.dir.tar")
	content["9999.dat.gz"] = []byte("not gzip at all")
	content["notes.txt"] = []byte("x")
	content["filestore/ab/abc"] = []byte("x")
	j := e.setJob(content, "16.0", engine.OutputDirectory)
	if _, err := e.run(j); err != nil {
		t.Fatalf("extra files: %v", err)
	}
	set, _ := e.files.OpenSet(context.Background(), j.ID, files.UpgradedDir)
	if _, ok := set.Member("notes.txt"); ok {
		t.Fatal("an extra file of the upload reached the result")
	}
	// Past the restore limit.
	small := newEnv(t, engine.Config{MaxRestoreBytes: 20_000})
	if _, err := small.run(small.setJob(dirDump(t, "odoo12.dir.tar"), "16.0", engine.OutputDirectory)); !errors.As(err, &ce) || !strings.Contains(ce.Message, "expands past") {
		t.Fatalf("over the limit: %v", err)
	}
	t.Cleanup(func() { assertNoScratch(t, e) })
}

// TestPassthroughSets: the passthrough engine and scenario runs give a set
// upload back as files.UpgradedDir (linked, the same manifest), and a
// zipped directory archive as its files; other dumps cannot become a
// directory without PostgreSQL.
func TestPassthroughSets(t *testing.T) {
	e := newEnv(t, engine.Config{Kind: engine.Passthrough})
	ctx := context.Background()
	j := e.setJob(dirDump(t, "odoo12.dir.tar"), "16.0", engine.OutputAsUploaded)
	res, err := e.run(j)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := e.files.Stat(ctx, j.ID, j.Upload)
	got, err := e.files.Stat(ctx, j.ID, files.UpgradedDir)
	if err != nil || got.ETag != up.ETag || res.UpgradedSize != up.Size {
		t.Fatalf("upgraded %+v (%v), upload %+v", got, err, up)
	}
	e.restoreDir(t, j.ID, files.UpgradedDir)

	j = e.job("odoo12.dir.zip", "16.0", "test")
	j.Output = engine.OutputDirectory
	if _, err := e.run(j); err != nil {
		t.Fatal(err)
	}
	set, err := e.files.OpenSet(ctx, j.ID, files.UpgradedDir)
	if err != nil || len(set.Members()) != len(dirDump(t, "odoo12.dir.tar")) {
		t.Fatalf("directory from a zip: %v", err)
	}

	j = e.job("odoo12.custom.dump", "16.0", "test")
	j.Output = engine.OutputDirectory
	var ce *engine.CustomerError
	if _, err := e.run(j); !errors.As(err, &ce) || !strings.Contains(ce.Message, "directory") {
		t.Fatalf("custom to directory: %v", err)
	}
	// A scenario run does not fail on it: it gives the upload back.
	res, err = e.eng.RunMock(ctx, j, engine.Hooks{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.files.Stat(ctx, j.ID, files.UpgradedArchive); err != nil || res.UpgradedSize != st.Size {
		t.Fatalf("scenario run: %+v, archive %+v %v", res, st, err)
	}
	j = e.setJob(map[string][]byte{"toc.dat": []byte("anything")}, "16.0", engine.OutputDirectory)
	res, err = e.eng.RunMock(ctx, j, engine.Hooks{}, 0)
	if err != nil || res.UpgradedSize != 8 {
		t.Fatalf("scenario run of a set: %+v %v", res, err)
	}
}
