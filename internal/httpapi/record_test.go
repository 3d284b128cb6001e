package httpapi

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/upgrade-server/upgrade-server/internal/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Fatalf("%s differs (-want +got):\n%s", path, diff)
	}
}

func TestRecordGolden(t *testing.T) {
	created := time.Date(2015, 9, 9, 7, 13, 49, 0, time.UTC)
	started := created.Add(2 * time.Hour)
	rec := recorder{links: links{public: "https://upgrade.example.com", region: "eu1"},
		now: func() time.Time { return started.Add(95 * time.Minute) }}
	size := int64(934902)
	tests := []struct {
		name string
		req  store.Request
	}{
		{"status_draft.golden", store.Request{ID: 10534, Key: "Aw7pItGVKFuZ_FOR3U8VFQ==", Email: "john.doe@example.com",
			Target: "8.0", Aim: "test", Filename: "db_name.dump", State: store.StateDraft, Issue: 648398, CreatedAt: created}},
		{"status_processing.golden", store.Request{ID: 10534, Key: "Aw7pItGVKFuZ_FOR3U8VFQ==", Email: "john.doe@example.com",
			Target: "8.0", Aim: "test", Filename: "db_name.dump", Timezone: ptr("Europe/Brussels"), State: store.StateProcessing,
			Issue: 648398, CreatedAt: created, UploadSize: &size, ProcessedAt: &started, EstimatedSeconds: ptr(int32(3600)),
			DatabaseUUID: ptr("2f3c1a40-5b7d-11e5-9d70-feff819cdc9f"), DatabaseVersion: ptr("7.0"), PostgreSQL: ptr("9.4"),
			Compressions: []string{"pgdmp_custom", "sql"}, Filestore: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.MarshalIndent(answer{Failures: []failure{}, Request: rec.record(tt.req)}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, append(got, '\n'))
		})
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{1: "1.00 bytes", 1023: "1023.00 bytes", 934902: "912.99 Kb",
		2 << 30: "2.00 Gb", 5 << 40: "5.00 Tb", 3 << 50: "3072.00 Tb"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
