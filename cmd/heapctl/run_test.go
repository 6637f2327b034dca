package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

func heapctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func TestHeapsJSON(t *testing.T) {
	out, err := heapctl(t, "heaps", "-o", "json")
	if err != nil {
		t.Fatalf("heaps: %v\n%s", err, out)
	}
	var got heapsOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var system bool
	for _, h := range got.Heaps {
		if h.Name == "system" {
			system = true
		}
	}
	if !system {
		t.Errorf("no system heap listed: %s", out)
	}
}

func TestAllocEveryHeapVerifies(t *testing.T) {
	testutil.CheckFDs(t)
	out, err := heapctl(t, "alloc", "--all", "--size", "64KiB", "-o", "json")
	if err != nil {
		t.Fatalf("alloc --all: %v\n%s", err, out)
	}
	var rs []allocResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(rs) == 0 {
		t.Fatal("no allocations reported")
	}
	for _, r := range rs {
		if !r.Verified || r.Size != 64<<10 || r.Name != "heapctl" {
			t.Errorf("%s: %+v", r.Heap, r)
		}
	}
}

// emptyRoot is a system with no heaps, no udmabuf and no DRM, whatever
// machine the test runs on: system is the emulated heap there.
func emptyRoot(t *testing.T) string {
	root := t.TempDir()
	for _, d := range []string{"dev", "sys/class", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestAllocTableSaysEmulated(t *testing.T) {
	out, err := heapctl(t, "--root", emptyRoot(t), "alloc", "--heap", "system", "--size", "4096", "--fill", "0x5a")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"system", "emulated", "4 KiB", "0x5a", "yes", "not importable by any device"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestBadInput(t *testing.T) {
	testutil.CheckFDs(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"alloc", "--size", "0"}, "size 0"},
		{[]string{"alloc", "--size", "4KB"}, "decimal units"},
		{[]string{"alloc"}, "--size or --width and --height are required"},
		{[]string{"alloc", "--width", "64"}, "--width and --height go together"},
		{[]string{"alloc", "--width", "64", "--height", "64", "--size", "4096"}, "not both"},
		{[]string{"alloc", "--width", "64", "--height", "64", "--format", "ZZZZZ"}, "--format"},
		{[]string{"alloc", "--size", "4096", "--device", "nope"}, "no DRM device"},
		{[]string{"resolve", "nope"}, "no display device"},
		{[]string{"alloc", "--size", "4096", "--heap", "nope"}, `no heap named "nope"`},
		{[]string{"alloc", "--size", "4096", "--fill", "0x1ff"}, "want a byte value"},
		{[]string{"alloc", "--size", "4096", "--name", strings.Repeat("x", 32)}, "--name"},
		{[]string{"alloc", "--size", "4096", "--heap", "system", "--all"}, "none of the others"},
		{[]string{"heaps", "-o", "yaml"}, "unknown output format"},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		out, err := heapctl(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("heapctl %v = %v (%s), want error containing %q", tc.args, err, out, tc.want)
		}
	}
}

func TestAllocImageOnSystem(t *testing.T) {
	testutil.CheckFDs(t)
	out, err := heapctl(t, "alloc", "--heap", "system", "--width", "100", "--height", "10", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rs []allocResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rs) != 1 || rs[0].Layout == nil || rs[0].Layout.Pitch != 448 || rs[0].Size != 8192 || !rs[0].Verified {
		t.Errorf("image allocation: %+v", rs)
	}
}

func TestPattern(t *testing.T) {
	for _, s := range []string{"counter", "0xa5", "7"} {
		p, err := parsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 64)
		p.fill(b)
		if off := p.check(b); off != -1 {
			t.Errorf("%s: check after fill fails at %d", s, off)
		}
		b[13] ^= 0xff
		if off := p.check(b); off < 0 || off > 13 {
			t.Errorf("%s: corruption at 13 found at %d", s, off)
		}
	}
}
