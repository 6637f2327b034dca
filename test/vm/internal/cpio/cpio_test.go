package cpio

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type entry struct {
	Name         string
	Mode         uint32
	Major, Minor uint32
	Data         string
}

// read parses a newc archive the way the kernel's init/initramfs.c does.
func read(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if len(b)-off < 110 {
			t.Fatalf("short archive at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:6+8*i+8], 16, 32)
			if err != nil {
				t.Fatalf("field %d: %v", i, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nsize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+nsize-1])
		off = align(off + 110 + nsize)
		data := string(b[off : off+size])
		off = align(off + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, entry{name, mode, rmaj, rmin, data})
	}
}

func TestWriter(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tree", "sub", "f"), []byte("12345"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/f", filepath.Join(dir, "tree", "l")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "exe"), []byte("#!"), 0o755); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, err := range []error{
		w.Dir("/dev", 0o755),
		w.CharDev("/dev/console", 0o600, 5, 1),
		w.Bytes("etc/x", 0o644, []byte("abc")),
		w.File("init", filepath.Join(dir, "exe")),
		w.Tree("t", filepath.Join(dir, "tree")),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []entry{
		{Name: "dev", Mode: TypeDir | 0o755},
		{Name: "dev/console", Mode: TypeChar | 0o600, Major: 5, Minor: 1},
		{Name: "etc/x", Mode: TypeRegular | 0o644, Data: "abc"},
		{Name: "init", Mode: TypeRegular | 0o755, Data: "#!"},
		{Name: "t", Mode: TypeDir | 0o755},
		{Name: "t/l", Mode: TypeSymlink | 0o777, Data: "sub/f"},
		{Name: "t/sub", Mode: TypeDir | 0o755},
		{Name: "t/sub/f", Mode: TypeRegular | 0o640, Data: "12345"},
	}
	if diff := cmp.Diff(want, read(t, buf.Bytes())); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
	if err := w.Bytes("late", 0o644, nil); err == nil {
		t.Error("Bytes after Close succeeded")
	}
}
