package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed assets
var assetFS embed.FS

// asset is an embedded file served under /assets/.
type asset struct {
	data  []byte
	ctype string
	etag  string
}

var assetTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

func loadAssets() map[string]asset {
	out := map[string]asset{}
	entries, _ := fs.ReadDir(assetFS, "assets")
	for _, e := range entries {
		b, err := assetFS.ReadFile("assets/" + e.Name())
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = asset{data: b, ctype: assetTypes[path.Ext(e.Name())], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}

// handleAsset serves a stylesheet, script or picture, revalidated by ETag
// (they change with the binary). Each has a route of its own, so any other
// name under /assets/ is an unknown page like any other.
func handleAsset(a asset) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secure(w, cspData)
		w.Header().Set("Content-Type", a.ctype)
		w.Header().Set("ETag", a.etag)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.data))
	}
}
