package httpapi_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/upgrade-server/upgrade-server/internal/files"
	"github.com/upgrade-server/upgrade-server/internal/httpapi"
	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

// newAdminEnv is an env with the admin API on (token "tok").
func newAdminEnv(t *testing.T) *env {
	st, pool := pgtest.NewStore(t)
	return newEnvWith(t, st, pool, t.TempDir(), func(o *httpapi.Config) { o.AdminToken, o.Admin = "tok", st })
}

func (e *env) admin(method, path string, body io.Reader) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// world is what an import may change: every row and every file.
func (e *env) world() string {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT row_to_json(r)::text FROM requests r ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	rows.Close()
	filepath.Walk(e.root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && filepath.Base(p) != ".lock" {
			b, _ := os.ReadFile(p)
			out = append(out, fmt.Sprintf("%s %q", strings.TrimPrefix(p, e.root), b))
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// rewrite changes an export's fixtures.json and drops the files of the
// requests it leaves out.
func rewrite(t *testing.T, export []byte, change func(fixtures []map[string]any) []map[string]any) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(export))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	tw := tar.NewWriter(gw)
	kept := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Name == "fixtures.json" {
			var fixtures []map[string]any
			json.Unmarshal(b, &fixtures)
			fixtures = change(fixtures)
			for _, f := range fixtures {
				kept[fmt.Sprint(f["request"].(map[string]any)["id"])] = true
			}
			b, _ = json.Marshal(fixtures)
			h.Size = int64(len(b))
		} else if parts := strings.Split(h.Name, "/"); len(parts) == 3 && !kept[parts[1]] {
			continue
		}
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	gw.Close()
	return out.Bytes()
}

// TestDamagedImportChangesNothing: an export that is truncated, or that
// the database refuses, leaves every row and every file as it was; a good
// one replaces each request's folder whole.
func TestDamagedImportChangesNothing(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	a, b := e.create(), e.create()
	noFailures(t, "upload a", e.upload("PUT", a, strings.NewReader("dump of a")))
	noFailures(t, "upload b", e.upload("PUT", b, strings.NewReader("dump of b")))
	code, export := e.admin("GET", "/admin/v1/export", nil)
	if code != 200 {
		t.Fatalf("export: HTTP %d", code)
	}
	// An artifact made after the export, which a good import must drop.
	e.write(mustID(t, a), files.Notes, []byte("later notes"))
	before := e.world()

	damaged := map[string][]byte{
		"truncated": export[:len(export)*2/3],
		"garbage":   []byte("not an export"),
		"refused by the database": rewrite(t, export, func(f []map[string]any) []map[string]any {
			row := f[0]["request"].(map[string]any)
			row["id"], row["state"] = 99, "no such state"
			return f[:1]
		}),
		"duplicate ids": rewrite(t, export, func(f []map[string]any) []map[string]any { return append(f, f[0]) }),
	}
	for name, body := range damaged {
		code, msg := e.admin("POST", "/admin/v1/import", bytes.NewReader(body))
		if code != 400 {
			t.Errorf("%s: HTTP %d %s", name, code, msg)
		}
		if diff := cmp.Diff(before, e.world()); diff != "" {
			t.Fatalf("%s changed the world (-before +after):\n%s", name, diff)
		}
	}
	// --keep over existing ids is refused the same way.
	if code, msg := e.admin("POST", "/admin/v1/import?replace=false", bytes.NewReader(export)); code != 400 {
		t.Fatalf("keep over existing ids: HTTP %d %s", code, msg)
	}
	if diff := cmp.Diff(before, e.world()); diff != "" {
		t.Fatalf("a refused --keep import changed the world:\n%s", diff)
	}

	// A good import of only request b: a goes, b's folder is the export's.
	onlyB := rewrite(t, export, func(f []map[string]any) []map[string]any { return f[1:] })
	if code, msg := e.admin("POST", "/admin/v1/import", bytes.NewReader(onlyB)); code != 200 {
		t.Fatalf("import: HTTP %d %s", code, msg)
	}
	if list, _ := e.files.List(context.Background(), mustID(t, a)); len(list) != 0 {
		t.Errorf("the removed request kept its files: %v", list)
	}
	if got := e.stored(mustID(t, b)); string(got) != "dump of b" {
		t.Errorf("b's upload: %q", got)
	}
	if left, _ := e.files.Imports(context.Background()); len(left) != 0 {
		t.Error("the import left its staging")
	}
	var imports int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM imports`).Scan(&imports)
	if imports != 0 {
		t.Errorf("%d finished imports are still recorded", imports)
	}
}

// TestDeleteAndReset: the rows go first, then the files.
func TestDeleteAndReset(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	a, b := e.create(), e.create()
	noFailures(t, "upload a", e.upload("PUT", a, strings.NewReader("dump of a")))
	noFailures(t, "upload b", e.upload("PUT", b, strings.NewReader("dump of b")))
	if code, msg := e.admin("DELETE", "/admin/v1/requests/"+a["request"], nil); code != 200 {
		t.Fatalf("delete: HTTP %d %s", code, msg)
	}
	if list, _ := e.files.List(context.Background(), mustID(t, a)); len(list) != 0 {
		t.Errorf("the deleted request kept its files: %v", list)
	}
	if code, msg := e.admin("POST", "/admin/v1/reset", nil); code != 200 {
		t.Fatalf("reset: HTTP %d %s", code, msg)
	}
	if list, _ := e.files.List(context.Background(), mustID(t, b)); len(list) != 0 {
		t.Errorf("reset kept files: %v", list)
	}
	// Stale files of an id the database hands out again are not taken
	// for the new request's.
	e.write(mustID(t, b)+1, files.Upload, []byte("stale"))
	e.staged(mustID(t, b)+1, []byte("stale"))
	c := e.create()
	if mustID(t, c) != mustID(t, b)+1 {
		t.Fatalf("unexpected id %s", c["request"])
	}
	if st := e.get("status", c); st.Request["filesize"] != nil {
		t.Fatalf("a new request shows a stale file: %v", st.Request["filesize"])
	}
}

// TestAdminRefusesNUL: text the database cannot store is a 400, not an
// internal error.
func TestAdminRefusesNUL(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	id := e.create()
	for path, body := range map[string]string{
		"/admin/v1/requests/" + id["request"] + "/state":    `{"state": "failed", "customer_message": "a\u0000b"}`,
		"/admin/v1/requests/" + id["request"] + "/scenario": `{"scenario": "fail=a\u0000b"}`,
	} {
		method := "POST"
		if strings.HasSuffix(path, "scenario") {
			method = "PUT"
		}
		if code, msg := e.admin(method, path, strings.NewReader(body)); code != 400 || !strings.Contains(string(msg), "NUL") {
			t.Errorf("%s: HTTP %d %s", path, code, msg)
		}
	}
}

// TestExportImportSets: a folder upload (Odoo's client's directory dump)
// and a directory-format result travel in an export, member by member
// with their manifests, and come back whole from an import.
func TestExportImportSets(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	ctx := context.Background()
	id := mustID(t, e.create())
	upload := files.SetName(string(files.NewUploadName()))
	folder := fstest.MapFS{"toc.dat": {Data: []byte("PGDMP toc")}, "3001.dat.gz": {Data: []byte("data")}}
	result := fstest.MapFS{"toc.dat": {Data: []byte("PGDMP upgraded")}, "blobs/4001.dat.gz": {Data: []byte("blob")}}
	sum, err := e.files.CommitFS(ctx, id, upload, folder, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.files.CommitFS(ctx, id, files.UpgradedDir, result, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE requests SET upload_name = $2, upload_size = $3, upload_sha256 = $4,
		upload_completed_at = now(), output = 'directory', state = 'done' WHERE id = $1`, id, string(upload), sum.Size, sum.SHA256); err != nil {
		t.Fatal(err)
	}
	code, export := e.admin("GET", "/admin/v1/export", nil)
	if code != 200 {
		t.Fatalf("export: HTTP %d", code)
	}
	before := e.world()
	// Changed after the export: the import puts the export's sets back.
	if _, err := e.files.CommitFS(ctx, id, files.UpgradedDir, fstest.MapFS{"toc.dat": {Data: []byte("other")}}, 0); err != nil {
		t.Fatal(err)
	}
	if code, msg := e.admin("POST", "/admin/v1/import", bytes.NewReader(export)); code != 200 {
		t.Fatalf("import: HTTP %d %s", code, msg)
	}
	if diff := cmp.Diff(before, e.world()); diff != "" {
		t.Fatalf("after export and import (-before +after):\n%s", diff)
	}
	for set, want := range map[files.Name]fstest.MapFS{upload: folder, files.UpgradedDir: result} {
		s, err := e.files.OpenSet(ctx, id, set)
		if err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		if len(s.Members()) != len(want) {
			t.Fatalf("%s holds %v", set, s.Members())
		}
		for name, f := range want {
			o, err := s.OpenMember(name)
			if err != nil {
				t.Fatalf("%s%s: %v", set, name, err)
			}
			got, _ := io.ReadAll(o)
			o.Close()
			if !bytes.Equal(got, f.Data) {
				t.Fatalf("%s%s: %q", set, name, got)
			}
		}
	}
}
