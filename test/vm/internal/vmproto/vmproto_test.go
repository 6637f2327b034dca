package vmproto

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/internal/testutil"
)

func TestRequireEnvMatchesTestutil(t *testing.T) {
	if EnvRequireDevices != testutil.RequireEnv {
		t.Errorf("EnvRequireDevices = %q, testutil.RequireEnv = %q", EnvRequireDevices, testutil.RequireEnv)
	}
}

func TestParseRoundTrip(t *testing.T) {
	r := Result{Status: Pass, Pkg: "github.com/heapd/heapd/dmabuf", Passed: 3, Skips: 1, Exit: 0, Time: "1.5s"}
	// Kernel messages can share a console line with a status line.
	l, ok := Parse("[    1.234] random: crng init done" + Marker + r.String() + "\r\n")
	if !ok || l.Kind != "RESULT" {
		t.Fatalf("Parse: ok=%v kind=%q", ok, l.Kind)
	}
	if diff := cmp.Diff(r, l.Result()); diff != "" {
		t.Errorf("Result (-want +got):\n%s", diff)
	}

	d := Done{Status: Fail, Binaries: 4, Passed: 3, Failed: 1, Skips: 2, Tests: 40}
	l, ok = Parse(Marker + d.String())
	if !ok || l.Kind != "DONE" {
		t.Fatalf("Parse: ok=%v kind=%q", ok, l.Kind)
	}
	if diff := cmp.Diff(d, l.Done()); diff != "" {
		t.Errorf("Done (-want +got):\n%s", diff)
	}
}

func TestParseNoMarker(t *testing.T) {
	for _, s := range []string{"", "=== RUN   TestX", "VMINIT:", "VMINIT: "} {
		if l, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %+v, want no status line", s, l)
		}
	}
}
