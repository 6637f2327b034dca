package dmabuf

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Samples in the formats the kernel prints (fs/proc/fd.c for the generic
// lines, dma_buf_show_fdinfo for the rest); the same texts seed the fuzz
// corpus in testdata/fuzz/FuzzParseFDInfo.
const (
	sampleHeap = "pos:\t0\nflags:\t02000002\nmnt_id:\t14\nino:\t1057\nsize:\t1048576\ncount:\t1\nexp_name:\tsystem\nname:\theapd-test\n"
	sampleUdma = "pos:\t0\nflags:\t02000002\nmnt_id:\t14\nino:\t1060\nsize:\t16384\ncount:\t2\nexp_name:\tudmabuf\n"
	sampleOld  = "pos:\t0\nflags:\t02\nmnt_id:\t13\nsize:\t4096\ncount:\t1\nexp_name:\tdrm\n" // before 5.14: no ino
	sampleMemf = "pos:\t0\nflags:\t0100002\nmnt_id:\t1\nino:\t3072\n"
)

func TestParseFDInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Info
	}{
		{"heap buffer with name", sampleHeap, Info{Pos: 0, Flags: 0o2000002, MntID: 14, Inode: 1057, Size: 1 << 20, Count: 1, Exporter: "system", Name: "heapd-test"}},
		{"udmabuf", sampleUdma, Info{Flags: 0o2000002, MntID: 14, Inode: 1060, Size: 16384, Count: 2, Exporter: "udmabuf"}},
		{"old kernel, no ino", sampleOld, Info{Flags: 0o2, MntID: 13, Size: 4096, Count: 1, Exporter: "drm"}},
		{"memfd: no DMA-BUF lines", sampleMemf, Info{Flags: 0o100002, MntID: 1, Inode: 3072}},
		{"empty", "", Info{}},
		{"no trailing newline", "size:\t8192\nexp_name:\tsystem", Info{Size: 8192, Exporter: "system"}},
		{"name keeps blanks and colons", "exp_name:\tsystem\nname:\t a:b \n", Info{Exporter: "system", Name: " a:b "}},
		{"empty name", "name:\t\n", Info{}},
		{"unknown and malformed lines skipped", "eventfd-count: 3\nno colon here\n\nsize:\t4096\nlock:\t1: POSIX\n", Info{Size: 4096}},
		{"first key wins", "size:\t4096\nexp_name:\tsystem\nname:\treal\nsize:\t1\nname:\tfake\n", Info{Size: 4096, Exporter: "system", Name: "real"}},
		{"spaces instead of tab in numbers", "size: 4096 \ncount:  3\n", Info{Size: 4096, Count: 3}},
		{"exporter with spaces", "exp_name:\tlinux,cma pool\n", Info{Exporter: "linux,cma pool"}},
		{"largest size", "size:\t9223372036854775807\n", Info{Size: 1<<63 - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFDInfo([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseFDInfo: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFDInfoErrors(t *testing.T) {
	for _, in := range []string{
		"size:\tabc\n",
		"size:\t-1\n",
		"size:\t9223372036854775808\n",
		"size:\t\n",
		"flags:\t0999\n",
		"flags:\t077777777777\n",
		"count:\t1.5\n",
		"ino:\t-3\n",
		"mnt_id:\tx\n",
		"pos:\t0x10\n",
		"exp_name:\tsystem\nsize:\t1e6\n",
	} {
		if info, err := ParseFDInfo([]byte(in)); !errors.Is(err, ErrBadFDInfo) {
			t.Errorf("ParseFDInfo(%q) = %+v, %v; want ErrBadFDInfo", in, info, err)
		}
	}
}

// formatFDInfo renders info as the kernel does (fs/proc/fd.c then
// dma_buf_show_fdinfo).
func formatFDInfo(i Info) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pos:\t%d\nflags:\t0%o\nmnt_id:\t%d\nino:\t%d\n", i.Pos, i.Flags, i.MntID, i.Inode)
	fmt.Fprintf(&b, "size:\t%d\ncount:\t%d\nexp_name:\t%s\n", i.Size, i.Count, i.Exporter)
	if i.Name != "" {
		fmt.Fprintf(&b, "name:\t%s\n", i.Name)
	}
	return b.String()
}

// FuzzParseFDInfo checks that the parser never panics, and that whatever it
// accepts survives a round trip through the kernel's own format.
func FuzzParseFDInfo(f *testing.F) {
	for _, s := range []string{sampleHeap, sampleUdma, sampleOld, sampleMemf, "size:\tabc\n", "name:\t\tx\nname:\ty"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseFDInfo(data)
		if err != nil {
			if !errors.Is(err, ErrBadFDInfo) {
				t.Fatalf("error %v does not wrap ErrBadFDInfo", err)
			}
			return
		}
		if info.Size < 0 {
			t.Fatalf("negative size %d", info.Size)
		}
		if strings.ContainsRune(info.Name, '\n') || strings.ContainsRune(info.Exporter, '\n') {
			t.Fatalf("value spans lines: %+v", info)
		}
		again, err := ParseFDInfo([]byte(formatFDInfo(info)))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", formatFDInfo(info), err)
		}
		if diff := cmp.Diff(info, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func TestEmulatedName(t *testing.T) {
	for _, tc := range []struct{ link, want string }{
		{"/memfd:heapd-emulated:frame (deleted)", "frame"},
		{"/memfd:heapd-emulated: (deleted)", ""},
		{"/memfd:heapd-emulated:a (deleted) (deleted)", "a (deleted)"},
		{"/memfd:other-program (deleted)", "other-program"},
		{"/memfd:heapd-emulated:x", "x"},
	} {
		if got := emulatedName(tc.link); got != tc.want {
			t.Errorf("emulatedName(%q) = %q, want %q", tc.link, got, tc.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", true},
		{"scanout-0", true},
		{strings.Repeat("x", MaxNameLen), true},
		{strings.Repeat("x", MaxNameLen+1), false},
		{"é" + strings.Repeat("x", MaxNameLen-1), false}, // bytes, not runes
		{"a\x00", false},
		{"a\nb", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
