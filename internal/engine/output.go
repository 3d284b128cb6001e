package engine

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/files"
)

// dumpResult writes the upgraded dump in the upload's own format: custom
// stays custom, an Odoo zip stays an Odoo zip, SQL stays SQL, gzip stays
// gzip. It is written to a temporary file and renamed into place. A
// directory output (or a set upload's) is written as sets (dumpSets).
func (r *run) dumpResult(ctx context.Context) error {
	if r.outputDir() {
		return r.dumpSets(ctx)
	}
	out, err := r.e.cfg.Files.Create(ctx, r.job.ID, files.UpgradedArchive)
	if err != nil {
		return err
	}
	defer out.Abort() // a no-op once committed
	outer := r.outerLayers()
	var w io.Writer = out
	var gz *gzip.Writer
	if len(outer) > 0 && outer[0] == "gzip" {
		gz = gzip.NewWriter(out)
		w = gz
	}
	switch {
	case r.info.Format == "directory":
		err = r.dumpDirectory(ctx, w, outer[len(outer)-1])
	case len(outer) > 0 && outer[len(outer)-1] == "zip":
		err = r.dumpZip(ctx, out)
	case len(outer) > 0 && outer[len(outer)-1] == "tar":
		err = r.dumpTarOfOne(ctx, w)
	default:
		err = r.pgDump(ctx, w, formatFlag(r.info.Format))
	}
	if err != nil {
		return err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return err
		}
	}
	_, err = out.Commit()
	return err
}

func formatFlag(format string) string {
	switch format {
	case "custom":
		return "-Fc"
	case "tar":
		return "-Ft"
	}
	return "-Fp"
}

func (r *run) pgDump(ctx context.Context, w io.Writer, flag string, extra ...string) error {
	args := append([]string{"--no-owner", "--no-acl", flag}, extra...)
	cmd := r.tool(ctx, "pg_dump", args...)
	cmd.Stdout = w
	var tail tailBuffer
	cmd.Stderr = &tail
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A database the restore accepted but pg_dump cannot read back
		// (row security forced on a table, say) is the dump's doing.
		r.e.logger.Info("pg_dump failed", "request_id", r.job.ID, "err", err, "output", tail.String())
		return customer("The upgraded database could not be dumped (pg_dump): %s", orUnknown(r.scrub(tail.String())))
	}
	return nil
}

// dumpZip writes an Odoo backup (dump.sql first, manifest.json,
// filestore/) or a zip of the one dump file it came as.
func (r *run) dumpZip(ctx context.Context, out io.Writer) error {
	zw := zip.NewWriter(out)
	name := "dump.sql"
	if src, err := zip.NewReader(r.src, r.src.Info().Size); err == nil {
		if m := pickZipMember(src); m != nil {
			name = m.Name
		}
	}
	flag := formatFlag(r.info.Format)
	fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
	if err != nil {
		return err
	}
	if err := r.pgDump(ctx, fw, flag); err != nil {
		return err
	}
	if name == "dump.sql" && (r.info.Filestore || r.info.ManifestVersion != "") {
		if err := r.writeManifest(ctx, zw); err != nil {
			return err
		}
		err := r.work.walk("filestore", func(name string, f *os.File, _ fs.FileInfo) error {
			fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
			if err != nil {
				return err
			}
			_, err = io.Copy(fw, f)
			return err
		})
		if err != nil {
			return err
		}
	}
	return zw.Close()
}

// writeManifest updates the backup's manifest.json for the target.
func (r *run) writeManifest(ctx context.Context, zw *zip.Writer) error {
	m := map[string]any{}
	if src, err := zip.NewReader(r.src, r.src.Info().Size); err == nil {
		for _, f := range src.File {
			if f.Name == "manifest.json" && f.UncompressedSize64 < 1<<20 {
				if rc, err := f.Open(); err == nil {
					json.NewDecoder(rc).Decode(&m)
					rc.Close()
				}
			}
		}
	}
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(r.job.Target, "saas~"), ".", 2)[0])
	m["odoo_dump"] = "1"
	m["version"] = r.job.Target
	m["major_version"] = r.job.Target
	m["version_info"] = []any{major, 0, 0, "final", 0, ""}
	mods := map[string]string{}
	for _, mc := range r.modules {
		if mc.After != "" {
			mods[mc.Name] = mc.After
		}
	}
	m["modules"] = mods
	if conn, err := r.e.scratchConn(ctx, r.scratch); err == nil {
		var num int
		if conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num) == nil {
			m["pg_version"] = fmt.Sprintf("%d.%d", num/10000, num%10000/100)
		}
		conn.Close(ctx)
	}
	fw, err := zw.CreateHeader(&zip.FileHeader{Name: "manifest.json", Method: zip.Deflate})
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(m, "", "    ")
	_, err = fw.Write(b)
	return err
}

// dumpDirectory writes a directory archive and packs it as the upload was
// packed (zip or tar), under the folder name the upload used.
func (r *run) dumpDirectory(ctx context.Context, w io.Writer, container string) error {
	const dir = "dump-dir"
	if err := r.pgDump(ctx, io.Discard, "-Fd", "-f", dir); err != nil {
		return err
	}
	root := "upgraded.dump"
	var add func(name string, f *os.File, st fs.FileInfo) error
	var closeFn func() error
	switch container {
	case "zip":
		zw := zip.NewWriter(w)
		add = func(name string, f *os.File, _ fs.FileInfo) error {
			fw, err := zw.CreateHeader(&zip.FileHeader{Name: path.Join(root, name), Method: zip.Deflate})
			if err != nil {
				return err
			}
			_, err = io.Copy(fw, f)
			return err
		}
		closeFn = zw.Close
	default:
		tw := tar.NewWriter(w)
		add = func(name string, f *os.File, st fs.FileInfo) error {
			if err := tw.WriteHeader(&tar.Header{Name: path.Join(root, name), Mode: 0o600, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
				return err
			}
			_, err := io.CopyN(tw, f, st.Size())
			return err
		}
		closeFn = tw.Close
	}
	err := r.work.walk(dir, func(name string, f *os.File, st fs.FileInfo) error {
		return add(strings.TrimPrefix(name, dir+"/"), f, st)
	})
	if err != nil {
		return err
	}
	return closeFn()
}

// dumpSets writes the upgraded database as a directory-format dump into
// the work folder, then commits it as the set files.UpgradedDir; the run's
// filestore (an Odoo backup's, as the upgrade left it), when it holds
// files, becomes the set files.FilestoreSet. The server reads back only
// plain files the tools made (workDir.fs), and copies them: the tools
// user never reaches the store.
func (r *run) dumpSets(ctx context.Context) error {
	const dir = "dump-dir"
	if err := r.pgDump(ctx, io.Discard, "-Fd", "-f", dir); err != nil {
		return err
	}
	if _, err := r.e.cfg.Files.CommitFS(ctx, r.job.ID, files.UpgradedDir, r.work.fs(dir), 0); err != nil {
		return fmt.Errorf("store the upgraded dump: %w", err)
	}
	if !r.work.holdsFiles("filestore") {
		return r.e.cfg.Files.Remove(ctx, r.job.ID, files.FilestoreSet)
	}
	if _, err := r.e.cfg.Files.CommitFS(ctx, r.job.ID, files.FilestoreSet, r.work.fs("filestore"), 0); err != nil {
		if errors.Is(err, files.ErrRefused) {
			return customer("The filestore cannot be stored as a folder: %s.", strings.TrimPrefix(err.Error(), "files: "))
		}
		return fmt.Errorf("store the filestore: %w", err)
	}
	return nil
}

// passDirectory extracts a zipped or tarred directory archive's toc.dat and
// data files (no PostgreSQL work) and stores them as files.UpgradedDir.
func (r *run) passDirectory(ctx context.Context) error {
	w, err := r.e.tools.newWorkDir(r.e.work, r.scratch.name)
	if err != nil {
		return fmt.Errorf("work folder: %w", err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			r.e.logger.Error("remove the work folder", "request_id", r.job.ID, "err", err)
		}
	}()
	r.work = w
	defer func() { r.work = nil }()
	if err := r.extractDirectory(w, "dir"); err != nil {
		return err
	}
	if _, err := r.e.cfg.Files.CommitFS(ctx, r.job.ID, files.UpgradedDir, w.fs("dir"), 0); err != nil {
		return fmt.Errorf("store the directory: %w", err)
	}
	return nil
}

// dumpTarOfOne writes a tar holding one dump, as the upload was.
func (r *run) dumpTarOfOne(ctx context.Context, w io.Writer) error {
	f, err := os.CreateTemp(r.e.work, ".inner-*.dump")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = r.pgDump(ctx, f, formatFlag(r.info.Format))
	f.Close()
	if err != nil {
		return err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "upgraded_" + r.job.Filename, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	in, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := io.Copy(tw, in); err != nil {
		return err
	}
	return tw.Close()
}
