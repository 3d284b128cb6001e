package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/upgrade-server/upgrade-server/internal/pgtest"
)

type v1Answer struct {
	Failures []struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"failures"`
	Request map[string]any `json:"request"`
}

func call(t *testing.T, base, method string, params url.Values) v1Answer {
	t.Helper()
	resp, err := http.Get(base + "/database/v1/" + method + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a v1Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

// scenarioRequest creates a request with a scenario contract, uploads
// junk (scenarios never look at it) and processes it.
func scenarioRequest(t *testing.T, base, contract string) url.Values {
	t.Helper()
	a := call(t, base, "create", url.Values{"contract": {contract}, "aim": {"test"}, "target": {"16.0"},
		"email": {"qa@example.com"}, "filename": {"db.dump"}})
	if len(a.Failures) != 0 {
		t.Fatalf("create %s: %+v", contract, a.Failures)
	}
	id := url.Values{"request": {fmt.Sprint(a.Request["id"])}, "key": {a.Request["key"].(string)}}
	req, _ := http.NewRequest("PUT", base+"/database/v1/upload?"+id.Encode(), strings.NewReader("not a dump at all"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := call(t, base, "process", id); len(p.Failures) != 0 {
		t.Fatalf("process: %+v", p.Failures)
	}
	return id
}

func waitState(t *testing.T, base string, id url.Values, states ...string) v1Answer {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a := call(t, base, "status", id)
		for _, s := range states {
			if a.Request["state"] == s {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %v, want one of %v", a.Request["state"], states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestScenarios drives every scenario contract through the public API.
func TestScenarios(t *testing.T) {
	s := startServer(t, map[string]string{
		"UPGRADE_DATABASE_URL": pgtest.NewSchema(t),
		"UPGRADE_HTTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_SFTP_ADDR":    "127.0.0.1:0",
		"UPGRADE_DATA_DIR":     t.TempDir(),
		"UPGRADE_CONTRACTS":    "M123456-abcdef", // scenario contracts need no listing
	})
	base := s.url

	t.Run("contract-not-found", func(t *testing.T) {
		a := call(t, base, "create", url.Values{"contract": {"scenario:contract-not-found"}, "aim": {"test"}, "target": {"16.0"},
			"email": {"qa@example.com"}, "filename": {"db.dump"}})
		if len(a.Failures) != 1 || a.Failures[0].Reason != "CONTRACT:NOT_FOUND" || a.Failures[0].Code != "scenario:contract-not-found" {
			t.Fatalf("%+v", a.Failures)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		a := call(t, base, "create", url.Values{"contract": {"scenario:explode"}, "aim": {"test"}, "target": {"16.0"},
			"email": {"qa@example.com"}, "filename": {"db.dump"}})
		if len(a.Failures) != 1 || a.Failures[0].Reason != "SCENARIO:INVALID" {
			t.Fatalf("%+v", a.Failures)
		}
	})
	t.Run("done", func(t *testing.T) {
		id := scenarioRequest(t, base, "scenario:duration=0")
		a := waitState(t, base, id, "done")
		resp, err := http.Get(a.Request["upgraded_dump_url"].(string))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upgraded archive: %v %v", err, resp)
		}
		resp.Body.Close()
	})
	t.Run("fail", func(t *testing.T) {
		id := scenarioRequest(t, base, "scenario:fail=Your database is too old for us")
		a := waitState(t, base, id, "invalid", "done")
		if a.Request["state"] != "invalid" || a.Request["customer_message"] != "Your database is too old for us" {
			t.Fatalf("%v %v", a.Request["state"], a.Request["customer_message"])
		}
	})
	t.Run("testing then skip_test", func(t *testing.T) {
		id := scenarioRequest(t, base, "scenario:testing")
		waitState(t, base, id, "testing")
		if k := call(t, base, "skip_test", id); len(k.Failures) != 0 || k.Request["state"] != "delivered" {
			t.Fatalf("skip_test: %+v %v", k.Failures, k.Request["state"])
		}
	})
	t.Run("cancel", func(t *testing.T) {
		id := scenarioRequest(t, base, "scenario:cancel")
		if a := waitState(t, base, id, "cancelled", "done"); a.Request["state"] != "cancelled" {
			t.Fatalf("state %v", a.Request["state"])
		}
	})
	t.Run("duration", func(t *testing.T) {
		start := time.Now()
		id := scenarioRequest(t, base, "scenario:duration=1.5")
		a := waitState(t, base, id, "processing", "done")
		if a.Request["state"] != "processing" {
			t.Fatalf("a 1.5 s run was already %v", a.Request["state"])
		}
		waitState(t, base, id, "done")
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Fatalf("done after %s, before its 1.5 s", d)
		}
	})
	t.Run("polls", func(t *testing.T) {
		id := scenarioRequest(t, base, "scenario:polls=3")
		var states []string
		for range 9 {
			time.Sleep(300 * time.Millisecond) // give the worker time to move it, so only polls hold it
			states = append(states, call(t, base, "status", id).Request["state"].(string))
		}
		want := "pending pending pending processing processing processing done done done"
		if strings.Join(states, " ") != want {
			t.Fatalf("states %v, want %s", states, want)
		}
	})
}
