package fault_test

import (
	"testing"

	"github.com/upgrade-server/upgrade-server/internal/fault"
)

func TestDrawIsSeededAndCounted(t *testing.T) {
	draws := func() []bool {
		in := fault.New(42)
		in.Add(fault.Rule{Kind: fault.ServerError, Method: "status", Probability: 0.5})
		var out []bool
		for range 64 {
			out = append(out, in.Draw("status", 1, fault.ServerError) != nil)
		}
		return out
	}
	a, b := draws(), draws()
	hits := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("the same seed drew different faults")
		}
		if a[i] {
			hits++
		}
	}
	if hits < 16 || hits > 48 {
		t.Fatalf("probability 0.5 fired %d of 64 times", hits)
	}
	in := fault.New(1)
	r, _ := in.Add(fault.Rule{Kind: fault.Latency, LatencyMS: 10, Times: 2, RequestID: 7})
	if in.Draw("create", 8, fault.Latency) != nil {
		t.Fatal("fired for another request")
	}
	if in.Draw("create", 7, fault.ServerError) != nil {
		t.Fatal("fired for another kind")
	}
	if in.Draw("create", 7, fault.Latency) == nil || in.Draw("x", 7, fault.Latency) == nil || in.Draw("x", 7, fault.Latency) != nil {
		t.Fatal("times=2 not honoured")
	}
	if !in.Remove(r.ID) || in.Remove(r.ID) {
		t.Fatal("remove")
	}
	for _, bad := range []fault.Rule{{Kind: "boom"}, {Kind: fault.HTTPError, Status: 200}, {Kind: fault.Latency},
		{Kind: fault.SFTPThrottle}, {Kind: fault.ServerError, Probability: 2}} {
		if _, err := in.Add(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	var nilInj *fault.Injector
	if nilInj.Draw("create", 1, fault.Latency) != nil {
		t.Fatal("a nil injector fired")
	}
}
