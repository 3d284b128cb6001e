package httpapi

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
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

// handleImport reads an export: the requests go in one transaction
// (replacing all unless ?replace=false), then their files are moved into
// place; nothing changes when the archive is malformed.
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
		ids := map[int64]bool{}
		for _, f := range fixtures {
			id, err := fixtureID(f)
			if err != nil {
				bad("%v", err)
				return
			}
			ids[id] = true
		}
		// Files go to temporary names first.
		var staged []string
		cleanup := func() {
			for _, p := range staged {
				os.Remove(p)
			}
		}
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				cleanup()
				bad("the archive is damaged: %v", err)
				return
			}
			id, name, ok := fixturePath(h.Name)
			if !ok || !ids[id] || h.Typeflag != tar.TypeReg {
				cleanup()
				bad("unexpected member %q", h.Name)
				return
			}
			dir, err := opts.Data.EnsureRequest(id)
			if err != nil {
				cleanup()
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
			tmp := filepath.Join(dir, ".import-"+name)
			if err := writeStaged(tmp, tr); err != nil {
				cleanup()
				bad("%s: %v", h.Name, err)
				return
			}
			staged = append(staged, tmp)
		}
		replace := r.URL.Query().Get("replace") != "false"
		if replace {
			// Files of requests about to be replaced go too.
			if list, err := admin.ListRequests(r.Context(), store.ListFilter{Limit: 10000}); err == nil {
				for _, req := range list {
					if !ids[req.ID] {
						os.RemoveAll(opts.Data.Request(req.ID))
					}
				}
			}
		}
		got, err := admin.ImportFixtures(r.Context(), fixtures, replace)
		if err != nil {
			cleanup()
			bad("%v", err)
			return
		}
		for _, tmp := range staged {
			if err := os.Rename(tmp, filepath.Join(filepath.Dir(tmp), strings.TrimPrefix(filepath.Base(tmp), ".import-"))); err != nil {
				adminError(w, logger, r, http.StatusInternalServerError, err)
				return
			}
		}
		if got == nil {
			got = []int64{}
		}
		adminJSON(w, http.StatusOK, map[string]any{"imported": got})
	}
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

func writeStaged(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(p)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
