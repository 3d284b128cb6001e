package dump_test

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"testing"
)

func zipOf(t *testing.T, files map[string]string) string {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for name, content := range files {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(content))
	}
	w.Close()
	return b.String()
}

func gzipWriter(w io.Writer) *gzip.Writer { return gzip.NewWriter(w) }
