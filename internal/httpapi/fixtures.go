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
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/upgrade-server/upgrade-server/internal/datadir"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

// fixtureFiles are the request files an export carries.
var fixtureFiles = []datadir.Artifact{datadir.Upload, datadir.UpgradedArchive, datadir.Notes, datadir.Modules}

// handleExport streams every request, its keys, log and files as a
// .tar.gz: fixtures.json first, then requests/<id>/<file>.
func handleExport(logger *slog.Logger, admin AdminStore, opts Options) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fixtures, err := admin.ExportFixtures(r.Context())
		if err != nil {
			adminError(w, logger, r, http.StatusInternalServerError, err)
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
			for _, a := range fixtureFiles {
				if err := addFile(tw, opts.Data.Path(id, a), fmt.Sprintf("requests/%d/%s", id, a)); err != nil {
					level := slog.LevelError
					if r.Context().Err() != nil {
						level = slog.LevelInfo // the client went away
					}
					logger.Log(r.Context(), level, "export", "request_id", id, "err", err)
					return // the truncated stream tells the client
				}
			}
		}
		tw.Close()
		gz.Close()
	}
}

func addFile(tw *tar.Writer, p, name string) error {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, st.Size())
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

// handleImport reads an export. Its files are staged first (under
// temporary names in the data directory), then the requests go in one
// transaction (replacing all unless ?replace=false), and only once it has
// committed are the request folders swapped for the staged ones; the
// folders of removed requests go last. A damaged export, or one the
// database refuses, changes nothing; a crash after the commit is finished
// by the next start (RecoverImports).
func handleImport(logger *slog.Logger, admin AdminStore, opts Options) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bad := func(format string, args ...any) {
			adminJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(format, args...)})
		}
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
		staging, err := opts.Data.NewStaging()
		if err != nil {
			adminError(w, logger, r, http.StatusInternalServerError, err)
			return
		}
		discard := func() {
			if err := staging.Discard(); err != nil {
				logger.Warn("import: remove the staged files", "err", err)
			}
		}
		ids := map[int64]bool{}
		for _, f := range fixtures {
			id, err := fixtureID(f)
			if err == nil {
				err = staging.AddRequest(id)
			}
			if err != nil {
				discard()
				bad("%v", err)
				return
			}
			ids[id] = true
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
			id, name, ok := fixturePath(h.Name)
			if !ok || !ids[id] || h.Typeflag != tar.TypeReg {
				discard()
				bad("unexpected member %q", h.Name)
				return
			}
			if err := writeStaged(staging, id, name, tr); err != nil {
				discard()
				bad("%s: %v", h.Name, err)
				return
			}
		}
		replace := r.URL.Query().Get("replace") != "false"
		got, removed, err := admin.ImportFixtures(r.Context(), fixtures, replace, staging.Nonce())
		if err != nil {
			discard()
			bad("%v", err)
			return
		}
		// Committed: from here the files follow, whatever happens to the call.
		ctx := context.WithoutCancel(r.Context())
		if err := staging.Apply(removed); err != nil {
			staging.Release() // the next start finishes the moves
			adminError(w, logger, r, http.StatusInternalServerError, fmt.Errorf("import committed; moving its files: %w", err))
			return
		}
		if err := admin.ForgetImport(ctx, staging.Nonce()); err != nil {
			logger.Warn("import: forget the finished import", "err", err)
		}
		if got == nil {
			got = []int64{}
		}
		adminJSON(w, http.StatusOK, map[string]any{"imported": got})
	}
}

// ImportStore is what RecoverImports needs; *store.Store satisfies it.
type ImportStore interface {
	CommittedImport(ctx context.Context, nonce string) ([]int64, bool, error)
	ForgetImport(ctx context.Context, nonce string) error
}

// RecoverImports finishes or drops the imports a crash interrupted: files
// staged for an import whose transaction committed are moved into place;
// those of one that never committed are removed. Imports running in other
// processes sharing the data directory are left alone (they hold their
// staging's lock). Run it at start-up.
func RecoverImports(ctx context.Context, logger *slog.Logger, imports ImportStore, data datadir.Dir) error {
	stagings, err := data.Stagings()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range stagings {
		removed, committed, err := imports.CommittedImport(ctx, s.Nonce())
		if err != nil {
			s.Release()
			errs = append(errs, err)
			continue
		}
		if !committed {
			logger.Info("import: removing the files of an import that never committed", "import", s.Nonce())
			errs = append(errs, s.Discard())
			continue
		}
		logger.Warn("import: finishing an import interrupted after its commit", "import", s.Nonce())
		if err := s.Apply(removed); err != nil {
			s.Release()
			errs = append(errs, err)
			continue
		}
		errs = append(errs, imports.ForgetImport(ctx, s.Nonce()))
	}
	return errors.Join(errs...)
}

// fixturePath reads requests/<id>/<known file>.
func fixturePath(name string) (int64, string, bool) {
	parts := strings.Split(path.Clean(name), "/")
	if len(parts) != 3 || parts[0] != "requests" {
		return 0, "", false
	}
	id, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || id <= 0 {
		return 0, "", false
	}
	for _, a := range fixtureFiles {
		if parts[2] == string(a) {
			return id, parts[2], true
		}
	}
	return 0, "", false
}

func writeStaged(s *datadir.Staging, id int64, name string, r io.Reader) error {
	f, err := s.Create(id, datadir.Artifact(name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
