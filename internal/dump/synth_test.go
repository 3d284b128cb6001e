package dump_test

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/upgrade-server/upgrade-server/internal/dump"
)

// archiveWriter writes pg_dump custom archives as pg_backup_archiver.c
// does, for the versions and compressions this machine's pg_dump 15 cannot
// produce (PostgreSQL 16+: archive 1.15 and 1.16, lz4 and zstd).
type archiveWriter struct {
	b    bytes.Buffer
	vmin byte
}

func (w *archiveWriter) int(v int64) {
	sign := byte(0)
	if v < 0 {
		sign, v = 1, -v
	}
	w.b.WriteByte(sign)
	binary.Write(&w.b, binary.LittleEndian, uint32(v))
}

func (w *archiveWriter) str(s string) { w.int(int64(len(s))); w.b.WriteString(s) }
func (w *archiveWriter) null()        { w.int(-1) }

type synthTable struct {
	id         int64
	tag, copy  string
	rows       string
	compressed func([]byte) []byte
}

func synthArchive(t *testing.T, vmin byte, alg byte, compress func([]byte) []byte) []byte {
	t.Helper()
	w := &archiveWriter{vmin: vmin}
	w.b.WriteString("PGDMP")
	w.b.Write([]byte{1, vmin, 0, 4, 8, 1}) // version, intSize, offSize, format custom
	w.b.WriteByte(alg)
	for _, v := range []int64{1, 2, 3, 26, 10, 126, 0} {
		w.int(v)
	}
	w.str("odoo17")
	w.str("17.2 (Debian 17.2-1)")
	w.str("17.2 (Debian 17.2-1)")
	tables := []synthTable{
		{id: 10, tag: "ir_module_module", copy: "COPY public.ir_module_module (id, name, state, latest_version) FROM stdin;\n",
			rows: "1\tbase\tinstalled\tsaas~17.2.1.3\n2\tweb\tinstalled\tsaas~17.2.1.0\n\\.\n\n"},
		{id: 11, tag: "ir_config_parameter", copy: "COPY public.ir_config_parameter (id, key, value) FROM stdin;\n",
			rows: "1\tdatabase.uuid\t11111111-2222-3333-4444-555555555555\n\\.\n\n"},
		{id: 12, tag: "res_partner", copy: "COPY public.res_partner (id, name) FROM stdin;\n", rows: "1\tA\n\\.\n\n"},
	}
	w.int(int64(len(tables)))
	for _, tb := range tables {
		w.int(tb.id)
		w.int(1)
		w.str("1259")
		w.str("16400")
		w.str(tb.tag)
		w.str("TABLE DATA")
		w.int(3)
		w.str("")
		w.str("")
		w.str(tb.copy)
		w.str("public")
		w.null()
		w.null() // tableam
		if vmin >= 16 {
			w.int('r')
		}
		w.str("odoo")
		w.str("false")
		w.str("5")
		w.null()
		w.b.WriteByte(1) // offset not set: piped output
		w.b.Write(make([]byte, 8))
	}
	// Data blocks in reverse order, to make the scan skip some.
	for i := len(tables) - 1; i >= 0; i-- {
		tb := tables[i]
		w.b.WriteByte(1)
		w.int(tb.id)
		data := compress([]byte(tb.rows))
		for len(data) > 0 { // chunks of at most 7 bytes: exercise joining
			n := min(7, len(data))
			w.int(int64(n))
			w.b.Write(data[:n])
			data = data[n:]
		}
		w.int(0)
	}
	return w.b.Bytes()
}

func TestNewerArchivesAndCompressions(t *testing.T) {
	zlibC := func(b []byte) []byte {
		var o bytes.Buffer
		z := zlib.NewWriter(&o)
		z.Write(b)
		z.Close()
		return o.Bytes()
	}
	lz4C := func(b []byte) []byte {
		var o bytes.Buffer
		z := lz4.NewWriter(&o)
		z.Write(b)
		z.Close()
		return o.Bytes()
	}
	zstdC := func(b []byte) []byte {
		e, _ := zstd.NewWriter(nil)
		defer e.Close()
		return e.EncodeAll(b, nil)
	}
	none := func(b []byte) []byte { return b }
	for _, tc := range []struct {
		vmin     byte
		alg      byte
		name     string
		compress func([]byte) []byte
	}{
		{15, 0, "none", none}, {15, 1, "gzip", zlibC}, {15, 2, "lz4", lz4C}, {15, 3, "zstd", zstdC},
		{16, 0, "none", none}, {16, 1, "gzip", zlibC}, {16, 2, "lz4", lz4C}, {16, 3, "zstd", zstdC},
	} {
		t.Run(fmt.Sprintf("1.%d %s", tc.vmin, tc.name), func(t *testing.T) {
			b := synthArchive(t, tc.vmin, tc.alg, tc.compress)
			info, err := dump.Inspect(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if info.DatabaseVersion != "saas~17.2" || info.DatabaseUUID != "11111111-2222-3333-4444-555555555555" ||
				info.PostgreSQL != "17" || info.Compression != tc.name || info.ArchiveVersion != fmt.Sprintf("1.%d", tc.vmin) {
				t.Fatalf("info = %+v", info)
			}
			// The same through a stream (gzip around it): no seeking.
			var gz bytes.Buffer
			zw := gzipWriter(&gz)
			zw.Write(b)
			zw.Close()
			info, err = dump.Inspect(bytes.NewReader(gz.Bytes()), int64(gz.Len()))
			if err != nil || info.DatabaseVersion != "saas~17.2" {
				t.Fatalf("gzipped: %+v %v", info, err)
			}
		})
	}
}
