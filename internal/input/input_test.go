package input

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRequestID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"58", 58, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"+58", 0, false},
		{"058", 0, false},
		{" 58", 0, false},
		{"58 ", 0, false},
		{"-58", 0, false},
		{"0", 0, false},
		{"", 0, false},
		{"5e1", 0, false},
		{"9223372036854775808", 0, false},
		{"٥٨", 0, false}, // Arabic-Indic digits
	} {
		got, ok := RequestID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RequestID(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"M123-abc", true},
		{"Zoë café", true},
		{"日本語", true}, // 9 bytes
		{"a\x00b", false},
		{"a\xffb", false},
		{"a\tb", false},
		{"a\u0085b", false}, // NEL, a C1 control
		{"a\u202eb", false}, // right-to-left override
		{"a\u2067b", false}, // right-to-left isolate
		{"a\u200fb", false}, // right-to-left mark
		{"a\u061cb", false}, // Arabic letter mark
		{"a\ufeffb", false}, // zero-width no-break space
		{"a\u2028b", false}, // line separator
		{"a\ufffdb", false}, // the replacement character
		{strings.Repeat("x", 10), true},
		{strings.Repeat("x", 11), false},
	} {
		if got := Text(tt.in, 10) == ""; got != tt.ok {
			t.Errorf("Text(%q) ok = %v, want %v", tt.in, got, tt.ok)
		}
	}
}

func TestFilenames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in, shown string
		valid     bool
	}{
		{"db_name.dump", "db_name.dump", true},
		{"base de données.zip", "base de données.zip", true},
		{"invoice\u202efdp.dump", "invoice_fdp.dump", false},
		{"../etc/passwd", ".._etc_passwd", false},
		{`a\b`, "a_b", false},
		{"..", "_", false},
		{"", "_", false},
		{"a\xffb", "a_b", false},
		{strings.Repeat("é", 128), strings.Repeat("é", 127), false},
	} {
		if got := ValidFilename(tt.in); got != tt.valid {
			t.Errorf("ValidFilename(%q) = %v, want %v", tt.in, got, tt.valid)
		}
		if got := ShownName(tt.in); got != tt.shown {
			t.Errorf("ShownName(%q) = %q, want %q", tt.in, got, tt.shown)
		}
		if tt.valid && ShownName(tt.in) != tt.in {
			t.Errorf("a valid name is changed for showing: %q", tt.in)
		}
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	rules := Rules{Targets: []string{"16.0", "17.0"}}
	params := map[string]string{"contract": " M1 ", "email": "a@example.com", "target": "16.0", "aim": "test",
		"filename": "db.dump", "timezone": "Europe/Brussels"}
	get := func(p map[string]string) func(string) string { return func(k string) string { return p[k] } }
	n, probs := Create(get(params), rules)
	if probs != nil || n.Contract != "M1" || n.Filename != "db.dump" || *n.Timezone != "Europe/Brussels" {
		t.Fatalf("valid parameters: %+v %+v", n, probs)
	}
	bad := map[string]string{"contract": strings.Repeat("M", 257), "email": "a\x00@example.com", "target": "16.\x000",
		"aim": "test", "filename": "db\u200f.dump", "timezone": "Europe/\x00"}
	_, probs = Create(get(bad), rules)
	var got []string
	for _, p := range probs {
		got = append(got, p.Reason+" "+p.Param)
	}
	want := []string{"PARAM:INVALID target", "PARAM:INVALID contract", "PARAM:INVALID email", "FILENAME:INVALID ", "TIMEZONE:INVALID "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("problems (-want +got):\n%s", diff)
	}
	for _, p := range probs {
		if p.Value != nil && Text(*p.Value, 1<<20) != "" {
			t.Errorf("%s echoes an unshowable value %q", p.Reason, *p.Value)
		}
	}
}
