package scenario_test

import (
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/scenario"
)

func TestParse(t *testing.T) {
	s, err := scenario.Parse("scenario:testing,duration=1.5,polls=3")
	if err != nil || !s.Testing || s.Duration == nil || *s.Duration != 1500*time.Millisecond || s.Polls != 3 {
		t.Fatalf("%+v %v", s, err)
	}
	s, err = scenario.Parse("scenario:duration=0,fail=Your dump is from the future, sorry")
	if err != nil || !s.Fail || s.FailMessage != "Your dump is from the future, sorry" || *s.Duration != 0 {
		t.Fatalf("%+v %v", s, err)
	}
	if s, _ := scenario.Parse("scenario:fail"); s.FailMessage != scenario.DefaultFailMessage {
		t.Fatalf("default message: %q", s.FailMessage)
	}
	for in, want := range map[string]string{
		"scenario:":                "no directive",
		"scenario:explode":         "unknown directive",
		"scenario:duration=-1":     "duration",
		"scenario:polls=x":         "polls",
		"scenario:fail,testing":    "exclude",
		"scenario:cancel,testing":  "exclude",
		"M123456-abcdef":           "not a scenario",
		"scenario:duration":        "duration",
		"scenario:polls=100000000": "polls",
	} {
		if _, err := scenario.Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error about %s", in, err, want)
		}
	}
}
