package httpapi

import (
	"os"
	"regexp"
	"testing"
)

// TestREADMEListsEveryFailure keeps the README's failure table complete.
func TestREADMEListsEveryFailure(t *testing.T) {
	src, err := reasonSources()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	reasons := regexp.MustCompile(`"([A-Z_]+:[A-Z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(reasons) < 25 {
		t.Fatalf("found only %d reasons in failure.go", len(reasons))
	}
	for _, m := range reasons {
		if !regexp.MustCompile("\\| `" + regexp.QuoteMeta(m[1]) + "` \\|").Match(readme) {
			t.Errorf("README.md's failure table lacks %s", m[1])
		}
	}
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

// reasonSources is the text of the files that declare failure reasons:
// the HTTP API's own and the parameters' (internal/input).
func reasonSources() ([]byte, error) {
	var out []byte
	for _, name := range []string{"failure.go", "../input/input.go"} {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}
