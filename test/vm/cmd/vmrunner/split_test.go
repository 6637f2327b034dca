package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  heapctl   heaps -o json ", []string{"heapctl", "heaps", "-o", "json"}},
		{`echo 'a b' "c d" e\ f`, []string{"echo", "a b", "c d", "e f"}},
		{`x '' ""`, []string{"x", "", ""}},
		{`say "he said \"hi\" \\o/"`, []string{"say", `he said "hi" \o/`}},
		{`a'b'"c"d`, []string{"abcd"}},
		{`keep $HOME * ; |`, []string{"keep", "$HOME", "*", ";", "|"}},
		{`'it''s'`, []string{"its"}},
		{"tab\tsep\nnl", []string{"tab", "sep", "nl"}},
	} {
		got, err := splitCommand(tc.in)
		if err != nil {
			t.Errorf("splitCommand(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("splitCommand(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
	for _, bad := range []string{`'open`, `"open`, `trail\`} {
		if got, err := splitCommand(bad); err == nil {
			t.Errorf("splitCommand(%q) = %q, want an error", bad, got)
		}
	}
}
