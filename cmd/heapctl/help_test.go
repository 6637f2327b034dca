package main

import (
	"strings"
	"testing"
)

// Every command's --help shows examples (issue 12: "--help on every
// binary and subcommand with examples").
func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range [][]string{
		{}, {"heaps"}, {"alloc"}, {"status"}, {"devices"}, {"resolve"},
		{"ledger"}, {"top"}, {"demo"}, {"demo", "scanout"},
	} {
		out, err := heapctl(t, append(cmd, "--help")...)
		if err != nil {
			t.Errorf("heapctl %s --help: %v", strings.Join(cmd, " "), err)
			continue
		}
		_, ex, ok := strings.Cut(out, "Examples:\n")
		first, _, _ := strings.Cut(ex, "\n")
		if !ok || !strings.Contains(first, "heapctl "+strings.Join(cmd, " ")) {
			t.Errorf("heapctl %s --help has no examples:\n%s", strings.Join(cmd, " "), out)
		}
	}
}
