package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseMatrix(t *testing.T) {
	o, err := parseArgs([]string{"test", "-matrix", "amd64=6.1,6.12 arm64=6.1 arm-on-arm64=6.1=/k"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range o.matrix {
		for _, k := range r.kernels {
			got = append(got, r.arch.name+":"+k.label+":"+k.dir)
		}
	}
	want := "amd64:6.1: amd64:6.12: arm64:6.1: arm-on-arm64:6.1:/k"
	if strings.Join(got, " ") != want {
		t.Errorf("matrix = %q, want %q", strings.Join(got, " "), want)
	}
	if l := targetLabel(o, o.matrix[1], o.matrix[1].kernels[0]); l != "arm64/6.1" {
		t.Errorf("label = %q, want arm64/6.1", l)
	}

	o, err = parseArgs([]string{"test", "-arch", "x86_64", "-kernel", "6.1 6.12"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.matrix) != 1 || o.matrix[0].arch.name != "amd64" || len(o.matrix[0].kernels) != 2 {
		t.Errorf("-arch x86_64 -kernel '6.1 6.12' = %+v", o.matrix)
	}
	if l := targetLabel(o, o.matrix[0], o.matrix[0].kernels[1]); l != "6.12" {
		t.Errorf("single-architecture label = %q, want 6.12", l)
	}

	for _, bad := range [][]string{
		{"test", "-matrix", "sparc=6.1"},
		{"test", "-matrix", "arm64="},
		{"test", "-matrix", "arm64=6.1", "-arch", "arm"},
		{"test", "-arch", "mips"},
		{"run", "-matrix", "amd64=6.1 arm=6.1", "-cmd", "true"},
		{"run", "-kernel", "6.1,6.12", "-cmd", "true"},
	} {
		if _, err := parseArgs(bad, io.Discard); err == nil {
			t.Errorf("parseArgs(%q) accepted it", bad)
		}
	}
}
