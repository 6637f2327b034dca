package main

import (
	"strings"
	"testing"
)

// heapd --help shows examples (issue 12), each a heapd command line using
// flags heapd has.
func TestHelpHasExamples(t *testing.T) {
	out, err := heapd(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	_, ex, ok := strings.Cut(out, "examples:\n")
	if !ok {
		t.Fatalf("heapd --help has no examples:\n%s", out)
	}
	ex, _, _ = strings.Cut(ex, "\n\n")
	for _, line := range strings.Split(ex, "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		f := strings.Fields(cmd)
		if len(f) == 0 || f[0] != "heapd" {
			t.Errorf("example %q is not a heapd command line", line)
			continue
		}
		for _, a := range f[1:] {
			if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(out, "-"+name+" ") && !strings.Contains(out, "-"+name+"\n") {
				t.Errorf("example %q uses --%s, which heapd --help does not list", line, name)
			}
		}
	}
}
