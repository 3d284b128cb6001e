package web

import (
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/upgrade-server/upgrade-server/internal/input"
	"github.com/upgrade-server/upgrade-server/internal/store"
)

func TestNewestFirst(t *testing.T) {
	got := newestFirst([]string{"7.0", "8.0", "16.0", "saas~17.2", "17.0", "18.0", "9.0", "master", "saas~17.1"})
	want := []string{"18.0", "saas~17.2", "saas~17.1", "17.0", "16.0", "9.0", "8.0", "7.0", "master"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1: "1 byte", 1023: "1023 bytes", 1024: "1 KiB", 23170: "22.6 KiB",
		64 << 10: "64 KiB", 1 << 20: "1 MiB", 1536 << 20: "1.5 GiB", 100 << 30: "100 GiB", 250 << 30: "250 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestExplain: each problem create can give lands on its form field, in
// words (the form's script reads the same table).
func TestExplain(t *testing.T) {
	rules := input.Rules{Targets: []string{"16.0", "17.0"}, ContractValidFunc: func(c string) bool { return c == "M1" }}
	cases := []struct {
		name      string
		params    map[string]string
		field     string
		wantWords string
	}{
		{"missing contract", map[string]string{"contract": ""}, "contract", "Enter your contract code."},
		{"unknown contract", map[string]string{"contract": "M2"}, "contract", "This server does not know this contract."},
		{"bad scenario", map[string]string{"contract": "scenario:duration=x"}, "contract", "This scenario contract cannot be used: duration=x: give seconds"},
		{"control character", map[string]string{"contract": "M\x001"}, "contract", "This cannot be used: it contains a control or format character"},
		{"too long", map[string]string{"email": strings.Repeat("a", 300) + "@x.example"}, "email", "This cannot be used: it is longer than 254 bytes."},
		{"bad email", map[string]string{"email": "nope"}, "email", "Enter an e-mail address such as name@example.com."},
		{"missing email", map[string]string{"email": " "}, "email", "Enter your e-mail address."},
		{"bad target", map[string]string{"target": "5.0"}, "target", "Choose one of the versions in the list."},
		{"bad aim", map[string]string{"aim": "fun"}, "aim", "Choose test or production."},
		{"no file", map[string]string{"filename": ""}, "dump", "Choose the dump file to upload."},
		{"bad file name", map[string]string{"filename": "a/b.dump"}, "dump", "This file's name cannot be used"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params := map[string]string{"contract": "M1", "email": "a@example.com", "target": "17.0", "aim": "test", "filename": "db.dump"}
			for k, v := range c.params {
				params[k] = v
			}
			_, probs := input.Create(func(n string) string { return params[n] }, rules)
			if len(probs) != 1 {
				t.Fatalf("problems %+v", probs)
			}
			field, text := explain(probs[0].Reason, probs[0].Param, probs[0].Message)
			if field != c.field || !strings.HasPrefix(text, c.wantWords) {
				t.Fatalf("explain(%s) = %q, %q; want %q, %q…", probs[0].Reason, field, text, c.field, c.wantWords)
			}
		})
	}
	if field, text := explain("SERVER:ERROR", "", "Internal error; please retry later (reference x)"); field != "" || !strings.HasPrefix(text, "Internal error") {
		t.Fatalf("an unknown reason: %q %q", field, text)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"db.dump":                    "db.dump",
		"my db.dump":                 "'my db.dump'",
		"it's.dump":                  `'it'\''s.dump'`,
		"http://h/x?request=1&key=k": "'http://h/x?request=1&key=k'",
		"$(rm -rf ~).dump":           "'$(rm -rf ~).dump'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := sftpQuote(`my "db".dump`); got != `"my \"db\".dump"` {
		t.Errorf("sftpQuote: %s", got)
	}
}

// TestProgress reads the steps from the request log as the engine writes
// it: "<step>…" as each starts; a new attempt starts over; a command's own
// output does not count.
func TestProgress(t *testing.T) {
	start := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	line := func(level, msg string) store.LogLine {
		return store.LogLine{Event: store.Event{Level: level, Message: msg}}
	}
	est := int32(100)
	req := store.Request{Aim: "test", ProcessedAt: &start, EstimatedSeconds: &est}
	p := &Pages{cfg: Config{Engine: "builtin"}}
	log := []store.LogLine{
		line("info", "Upload received over HTTP: 1 Kb."),
		line("info", "Queued for processing."),
		line("info", "Inspecting the dump…"),
		line("info", "Inspecting the dump: done in 3ms."),
		line("info", "Restoring into a scratch database…"),
		line("warning", "pg_restore said: something…"),
	}
	pr := p.progress(req, log, start.Add(10*time.Second))
	if pr.Step != 2 || pr.Steps != 5 || pr.StepName != "Restoring into a scratch database" || pr.Percent != 20 ||
		pr.Text != "Step 2 of 5: Restoring into a scratch database · 0:10 elapsed of about 1:40" {
		t.Fatalf("%+v", pr)
	}
	pr = p.progress(req, log, start.Add(90*time.Second))
	if pr.Percent != 90 {
		t.Fatalf("90 s of 100: %d %%", pr.Percent)
	}
	pr = p.progress(req, log, start.Add(500*time.Second))
	if pr.Percent != 99 {
		t.Fatalf("past the estimate: %d %%", pr.Percent)
	}
	log = append(log, line("warning", "Attempt 2: taking over from a worker that stopped."), line("info", "Inspecting the dump…"),
		line("info", "| a command's output…"))
	if pr = p.progress(req, log, start); pr.Step != 1 || pr.StepName != "Inspecting the dump" {
		t.Fatalf("a new attempt: %+v", pr)
	}
	p.cfg.Engine = "passthrough"
	req.EstimatedSeconds = nil
	if pr = p.progress(req, log, start); pr.Steps != 2 || pr.Percent != 25 {
		t.Fatalf("passthrough, no estimate: %+v", pr)
	}
	sc := "scenario:duration=5"
	req.Scenario = &sc
	if pr = p.progress(req, log[:2], start); pr.Step != 0 || pr.Steps != 1 || pr.Percent != 0 || pr.Text != "Starting · 0:00 elapsed" {
		t.Fatalf("a scenario before its step: %+v", pr)
	}
	for engine, want := range map[string]int{"builtin": 4, "command": 4, "passthrough": 2} {
		if got := plannedSteps(engine, "production", false); got != want {
			t.Errorf("%s: %d steps, want %d", engine, got, want)
		}
	}
}

// TestSessions: a session ends after its idle time, after its longest
// life however busy, and at sign-out; an expired one is said so once.
func TestSessions(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(func() time.Time { return now }, 30*time.Minute, 2*time.Hour)
	id, first := s.start()
	if len(id) != 64 || len(first.csrf) != 64 || id == first.csrf {
		t.Fatalf("id %q csrf %q", id, first.csrf)
	}
	for range 7 { // busy: used every 20 minutes, for 2h20
		now = now.Add(20 * time.Minute)
		_, st := s.get(id)
		if now.Sub(first.created) <= 2*time.Hour && st != sessionValid {
			t.Fatalf("at %s: %v", now, st)
		}
		if now.Sub(first.created) > 2*time.Hour && st != sessionExpired {
			t.Fatalf("past its life, at %s: %v", now, st)
		}
	}
	if _, st := s.get(id); st != sessionNone {
		t.Fatalf("an expired session is reported once: %v", st)
	}
	id, _ = s.start()
	now = now.Add(31 * time.Minute)
	if _, st := s.get(id); st != sessionExpired {
		t.Fatalf("idle 31 minutes: %v", st)
	}
	id, _ = s.start()
	s.end(id)
	if _, st := s.get(id); st != sessionNone {
		t.Fatalf("after sign-out: %v", st)
	}
	if _, st := s.get(""); st != sessionNone {
		t.Fatal("no cookie")
	}
	for range maxSessions + 10 {
		s.start()
	}
	if len(s.byHash) > maxSessions {
		t.Fatalf("%d sessions kept", len(s.byHash))
	}
}

// TestLimiter: after a few wrong tokens from one address, it waits a pause
// that doubles, up to a bound; other addresses are not slowed; a right
// token clears the address.
func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(func() time.Time { return now })
	var waits []time.Duration
	for range 10 {
		l.failed("10.0.0.1")
		waits = append(waits, l.wait("10.0.0.1"))
		now = now.Add(l.wait("10.0.0.1"))
	}
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		30 * time.Second, 30 * time.Second, 30 * time.Second}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	if l.wait("10.0.0.2") != 0 {
		t.Fatal("another address waits")
	}
	l.failed("10.0.0.1")
	l.succeeded("10.0.0.1")
	if l.wait("10.0.0.1") != 0 {
		t.Fatal("a right token did not clear the address")
	}
	l.failed("10.0.0.3")
	l.failed("10.0.0.3")
	l.failed("10.0.0.3")
	now = now.Add(forgetAfter + time.Minute)
	l.failed("10.0.0.3")
	if l.wait("10.0.0.3") != 0 {
		t.Fatal("old failures still count")
	}
}

// TestTemplatesHoldNoInlineCode: no page carries inline script, inline
// style or event handler attributes, which the Content-Security-Policy
// would block (the form's words are a data block, not a script).
func TestTemplatesHoldNoInlineCode(t *testing.T) {
	bad := regexp.MustCompile(`(?i)<script(?:[^>]*)>|\sstyle=|\son[a-z]+=|javascript:|<style`)
	err := fs.WalkDir(templateFS, "templates", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := templateFS.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range bad.FindAllString(string(b), -1) {
			switch {
			case strings.Contains(m, `type="application/json"`), strings.Contains(m, ` src=`):
			default:
				t.Errorf("%s: %q", path, m)
			}
		}
		if strings.Contains(string(b), "http://") || strings.Contains(string(b), "https://") {
			t.Errorf("%s names another site", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(parseTemplates()) != len(pageNames) {
		t.Fatal("not every page parsed")
	}
}
