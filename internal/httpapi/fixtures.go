package httpapi

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// fixtureFile reports whether an export may carry a request file of this
// name: an upload (under the name its record points to) or an artifact.
func fixtureFile(name string) bool {
	switch files.Name(name) {
	case files.Upload, files.UpgradedArchive, files.Notes, files.Modules:
		return true
	}
	return uploadNameRE.MatchString(name)
}

var uploadNameRE = regexp.MustCompile(`^upload-[0-9a-f]{16}$`)

// fixtureSet says whether a request's set (its name without the final
// "/") belongs in an export: a folder upload, the directory-format
// result, its filestore.
func fixtureSet(base string) bool {
	switch files.SetName(base) {
	case files.UpgradedDir, files.FilestoreSet:
		return true
	}
	return uploadNameRE.MatchString(base)
}

// handleExport streams every request, its keys, log and files as a
// .tar.gz: fixtures.json first, then requests/<id>/<file>.
func handleExport(logger *slog.Logger, admin AdminStore, fs FileStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fixtures, err := admin.ExportFixtures(r.Context())
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		if fixtures == nil {
			fixtures = []store.Fixture{}
		}
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", `attachment; filename="upgrade-fixtures.tar.gz"`)
		gz := gzip.NewWriter(w)
		tw := tar.NewWriter(gz)
		b, _ := json.MarshalIndent(fixtures, "", "  ")
		if err := tw.WriteHeader(&tar.Header{Name: "fixtures.json", Mode: 0o600, Size: int64(len(b))}); err != nil {
			return
		}
		tw.Write(b)
		for _, f := range fixtures {
			id, err := fixtureID(f)
			if err != nil {
				logger.Error("export", "err", err)
				return
			}
			if err := exportFiles(r.Context(), tw, fs, id); err != nil {
				level := slog.LevelError
				if r.Context().Err() != nil {
					level = slog.LevelInfo // the client went away
				}
				logger.Log(r.Context(), level, "export", "request_id", id, "err", err)
				return // the truncated stream tells the client
			}
		}
		tw.Close()
		gz.Close()
	}
}

func exportFiles(ctx context.Context, tw *tar.Writer, fs FileStore, id int64) error {
	list, err := fs.List(ctx, id)
	if err != nil {
		return err
	}
	for _, info := range list {
		if info.Name.IsSet() {
			if err := exportSet(ctx, tw, fs, id, info.Name); err != nil {
				return err
			}
			continue
		}
		if !fixtureFile(string(info.Name)) {
			continue
		}
		o, err := fs.Open(ctx, id, info.Name)
		if errors.Is(err, files.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("requests/%d/%s", id, info.Name), Mode: 0o600,
			Size: o.Info().Size, ModTime: o.Info().ModTime})
		if err == nil {
			_, err = io.CopyN(tw, o, o.Info().Size)
		}
		o.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// exportSet writes a set as requests/<id>/<set>/<member>…, then its
// manifest as requests/<id>/<set>.manifest (an import puts the manifest in
// place last).
func exportSet(ctx context.Context, tw *tar.Writer, fs FileStore, id int64, name files.Name) error {
	base := strings.TrimSuffix(string(name), "/")
	if !fixtureSet(base) {
		return nil
	}
	set, err := fs.OpenSet(ctx, id, name)
	if errors.Is(err, files.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, m := range set.Members() {
		o, err := set.OpenMember(m.Name)
		if err != nil {
			return err
		}
		err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("requests/%d/%s/%s", id, base, m.Name), Mode: 0o600,
			Size: m.Size, ModTime: o.Info().ModTime})
		if err == nil {
			_, err = io.CopyN(tw, o, m.Size)
		}
		o.Close()
		if err != nil {
			return err
		}
	}
	manifest := set.Manifest()
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("requests/%d/%s%s", id, base, files.ManifestSuffix), Mode: 0o600,
		Size: int64(len(manifest))}); err != nil {
		return err
	}
	_, err = tw.Write(manifest)
	return err
}

func fixtureID(f store.Fixture) (int64, error) {
	var row struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(f.Request, &row); err != nil || row.ID <= 0 {
		return 0, fmt.Errorf("a fixture without a request id")
	}
	return row.ID, nil
}

// handleImport reads an export. Its files are staged first, then the
// requests go in one transaction (replacing all unless ?replace=false),
// and only once it has committed do the staged files take the place of
// the requests' own; the files of removed requests go last. A damaged
// export, or one the database refuses, changes nothing; a crash after the
// commit is finished by the next start (RecoverImports).
func handleImport(logger *slog.Logger, admin AdminStore, fs FileStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bad := func(format string, args ...any) { adminBad(w, r, logger, fmt.Sprintf(format, args...)) }
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			bad("not a .tar.gz export: %v", err)
			return
		}
		tr := tar.NewReader(gz)
		h, err := tr.Next()
		if err != nil || h.Name != "fixtures.json" || h.Size > 256<<20 {
			bad("an export starts with fixtures.json")
			return
		}
		var fixtures []store.Fixture
		if err := json.NewDecoder(tr).Decode(&fixtures); err != nil {
			bad("fixtures.json: %v", err)
			return
		}
		ids := map[int64]bool{}
		var order []int64
		for _, f := range fixtures {
			id, err := fixtureID(f)
			if err != nil {
				bad("%v", err)
				return
			}
			ids[id] = true
			order = append(order, id)
		}
		im, err := fs.NewImport(r.Context())
		if err != nil {
			adminError(w, logger, r, err)
			return
		}
		discard := func() {
			if err := im.Discard(context.WithoutCancel(r.Context())); err != nil {
				logger.Warn("import: remove the staged files", "err", err)
			}
		}
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				discard()
				bad("the archive is damaged: %v", err)
				return
			}
			id, f, ok := fixturePath(h.Name)
			if !ok || !ids[id] || h.Typeflag != tar.TypeReg {
				discard()
				bad("unexpected member %q", h.Name)
				return
			}
			if err := stageFile(r.Context(), im, id, f, tr); err != nil {
				discard()
				bad("%s: %v", h.Name, err)
				return
			}
		}
		replace := r.URL.Query().Get("replace") != "false"
		got, removed, err := admin.ImportFixtures(r.Context(), fixtures, replace, im.Nonce())
		if err != nil {
			discard()
			bad("%v", err)
			return
		}
		// Committed: from here the files follow, whatever happens to the call.
		ctx := context.WithoutCancel(r.Context())
		if err := im.Apply(ctx, order, removed); err != nil {
			adminError(w, logger, r, fmt.Errorf("import committed; moving its files (the next start finishes it): %w", err))
			return
		}
		if err := admin.ForgetImport(ctx, im.Nonce()); err != nil {
			logger.Warn("import: forget the finished import", "err", err)
		}
		if len(removed) > 0 {
			if err := admin.ForgetDeleted(ctx, removed); err != nil {
				logger.Warn("import: forget the removed requests", "err", err)
			}
		}
		if got == nil {
			got = []int64{}
		}
		writeJSON(w, r, logger, http.StatusOK, map[string]any{"imported": got})
	}
}

func stageFile(ctx context.Context, im *files.Import, id int64, f fixtureEntry, r io.Reader) error {
	var w *files.Writer
	var err error
	if f.set != "" {
		w, err = im.CreateSetFile(ctx, id, files.SetName(f.set), f.member)
	} else {
		w, err = im.Create(ctx, id, files.Name(f.name))
	}
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return err
	}
	_, err = w.Commit()
	return err
}

// ImportStore is what RecoverImports needs; *store.Store satisfies it.
type ImportStore interface {
	CommittedImport(ctx context.Context, nonce string) (imported, removed []int64, committed bool, err error)
	ForgetImport(ctx context.Context, nonce string) error
	ForgetDeleted(ctx context.Context, ids []int64) error
}

// ImportFiles is what RecoverImports needs of the files; *files.Store
// satisfies it.
type ImportFiles interface {
	Imports(ctx context.Context) ([]files.ImportStaging, error)
	OpenImport(nonce string) *files.Import
}

// abandonedImport is how long an import may stage files before its
// transaction commits; a staging older than that with no committed record
// was abandoned (a crash) and is removed.
const abandonedImport = time.Hour

// RecoverImports finishes or drops the imports a crash interrupted: files
// staged for an import whose transaction committed take their places;
// those of one that never committed are removed once old enough that no
// process can still be staging them. Run it at start-up.
func RecoverImports(ctx context.Context, logger *slog.Logger, imports ImportStore, fs ImportFiles) error {
	stagings, err := fs.Imports(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range stagings {
		im := fs.OpenImport(st.Nonce)
		imported, removed, committed, err := imports.CommittedImport(ctx, st.Nonce)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !committed {
			if time.Since(st.Started) < abandonedImport {
				continue // perhaps another process is staging it now
			}
			logger.Info("import: removing the files of an import that never committed", "import", st.Nonce)
			errs = append(errs, im.Discard(ctx))
			continue
		}
		logger.Warn("import: finishing an import interrupted after its commit", "import", st.Nonce)
		if err := im.Apply(ctx, imported, removed); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, imports.ForgetImport(ctx, st.Nonce))
		if len(removed) > 0 {
			errs = append(errs, imports.ForgetDeleted(ctx, removed))
		}
	}
	return errors.Join(errs...)
}

// fixtureEntry is a file of an export: a request's file (name), or a
// set's member or manifest (set, and member: "" for the manifest).
type fixtureEntry struct {
	name, set, member string
}

// fixturePath reads requests/<id>/<file>, requests/<id>/<set>/<member…>
// and requests/<id>/<set>.manifest of an export.
func fixturePath(name string) (int64, fixtureEntry, bool) {
	parts := strings.Split(path.Clean(name), "/")
	if len(parts) < 3 || parts[0] != "requests" {
		return 0, fixtureEntry{}, false
	}
	id, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != parts[1] {
		return 0, fixtureEntry{}, false
	}
	switch base, manifest := strings.CutSuffix(parts[2], files.ManifestSuffix); {
	case len(parts) > 3 && fixtureSet(parts[2]):
		return id, fixtureEntry{set: parts[2], member: strings.Join(parts[3:], "/")}, true
	case len(parts) == 3 && manifest && fixtureSet(base):
		return id, fixtureEntry{set: base}, true
	case len(parts) == 3 && fixtureFile(parts[2]):
		return id, fixtureEntry{name: parts[2]}, true
	}
	return 0, fixtureEntry{}, false
}
