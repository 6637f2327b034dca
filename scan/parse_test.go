package scan

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/dmabuf"
)

// The capture maps, per buffer, what scan.test -scan.capture mapped.
func TestParseMapsCapture(t *testing.T) {
	for _, k := range kernels {
		t.Run(k, func(t *testing.T) {
			maps, err := ParseMaps(readCapture(t, k)["maps"])
			if err != nil {
				t.Fatal(err)
			}
			type row struct {
				Inode  uint64
				Name   string
				Len    uint64
				Offset uint64
				Perms  string
			}
			var got []row
			for _, m := range maps {
				got = append(got, row{m.Inode, m.Name, m.Len(), m.Offset, m.Perms})
				if !strings.HasPrefix(m.Dev, "00:") {
					t.Errorf("inode %d: device %q, want the pseudo file system's 00:xx", m.Inode, m.Dev)
				}
			}
			want := []row{
				{6, "", 16 << 10, 0x100000000, "rw-s"}, // vgem export: a fake offset
				{5, "cap-udmabuf", 64 << 10, 0, "rw-s"},
				{4, "a b:c", 8 << 10, 0, "rw-s"},
				{2, "cap-reserved", 2 << 20, 0, "rw-s"},
				{1, "cap-system", 1 << 20, 0, "rw-s"},
				{1, "cap-system", 1 << 20, 0, "rw-s"},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mappings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMaps(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Mapping
		err      bool
	}{
		{name: "empty"},
		{name: "no dmabuf", in: "00400000-00578000 r-xp 00000000 00:02 235       /bin/x\n7ffc-7ffd rw-p 00000000 00:00 0    [stack]\n"},
		{
			name: "no trailing newline",
			in:   "7f00-7f10 rw-s 00000000 00:07 12 /dmabuf:n",
			want: []Mapping{{Start: 0x7f00, End: 0x7f10, Perms: "rw-s", Dev: "00:07", Inode: 12, Name: "n"}},
		},
		{
			name: "name with blanks kept verbatim",
			in:   "7f00-7f10 r--s 00001000 00:07 12                   /dmabuf:  two  blanks \n",
			want: []Mapping{{Start: 0x7f00, End: 0x7f10, Perms: "r--s", Offset: 0x1000, Dev: "00:07", Inode: 12, Name: "  two  blanks "}},
		},
		{
			name: "marker inside another path",
			in:   "7f00-7f10 r--p 00000000 08:01 99 /home/u/my /dmabuf:file\n",
		},
		{name: "bad range", in: "7f00 rw-s 00000000 00:07 12 /dmabuf:x\n", err: true},
		{name: "bad start", in: "zz-7f10 rw-s 00000000 00:07 12 /dmabuf:x\n", err: true},
		{name: "end before start", in: "7f10-7f00 rw-s 00000000 00:07 12 /dmabuf:x\n", err: true},
		{name: "bad perms", in: "7f00-7f10 rw 00000000 00:07 12 /dmabuf:x\n", err: true},
		{name: "bad offset", in: "7f00-7f10 rw-s 0x0 00:07 12 /dmabuf:x\n", err: true},
		{name: "bad dev", in: "7f00-7f10 rw-s 00000000 0007 12 /dmabuf:x\n", err: true},
		{name: "bad inode", in: "7f00-7f10 rw-s 00000000 00:07 -1 /dmabuf:x\n", err: true},
		{name: "too few fields", in: "7f00-7f10 rw-s /dmabuf:x\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMaps([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBufinfoCapture(t *testing.T) {
	for _, k := range kernels {
		t.Run(k, func(t *testing.T) {
			bi, err := ParseBufinfo(readCapture(t, k)["bufinfo"])
			if err != nil {
				t.Fatal(err)
			}
			want := Bufinfo{
				Objects: 6,
				Bytes:   3239936,
				Buffers: []BufinfoEntry{
					{Size: 16384, Flags: 2, Mode: 0x80007, Count: 4, Exporter: "drm", Inode: 6},
					{Size: 65536, Flags: 2, Mode: 0x80007, Count: 2, Exporter: "udmabuf", Inode: 5, Name: "cap-udmabuf"},
					{Size: 8192, Flags: 2, Mode: 0x80007, Count: 2, Exporter: "system", Inode: 4, Name: "a b:c"},
					{Size: 4096, Flags: 2, Mode: 0x80007, Count: 1, Exporter: "system", Inode: 3},
					{Size: 2 << 20, Flags: 2, Mode: 0x80007, Count: 2, Exporter: "reserved", Inode: 2, Name: "cap-reserved",
						Fences: []string{"write fence:sw_sync scan.test seq 1 unsignalled"}},
					{Size: 1 << 20, Flags: 2, Mode: 0x80007, Count: 10, Exporter: "system", Inode: 1, Name: "cap-system",
						Devices: []string{"vkms", "vgem"}},
				},
			}
			if diff := cmp.Diff(want, bi); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			var sum int64
			for _, b := range bi.Buffers {
				sum += b.Size
			}
			if sum != bi.Bytes || len(bi.Buffers) != bi.Objects {
				t.Errorf("buffers add up to %d objects, %d bytes; the kernel's total says %d, %d", len(bi.Buffers), sum, bi.Objects, bi.Bytes)
			}
		})
	}
}

func TestParseBufinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Bufinfo
		err      bool
	}{
		{name: "empty", want: Bufinfo{Objects: -1, Bytes: -1}},
		{
			name: "no buffers",
			in:   "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n\nTotal 0 objects, 0 bytes\n",
			want: Bufinfo{},
		},
		{
			name: "name with a tab, truncated before the totals",
			in:   "00004096\t00000002\t00080007\t00000001\tsystem\t00000003\ta\tb\n\tAttached Devices:\n\tfe00b840.mailbox\n",
			want: Bufinfo{Objects: -1, Bytes: -1, Buffers: []BufinfoEntry{{Size: 4096, Flags: 2, Mode: 0x80007, Count: 1,
				Exporter: "system", Inode: 3, Name: "a\tb", Devices: []string{"fe00b840.mailbox"}}}},
		},
		{name: "bad size", in: "0000x096\t00000002\t00080007\t00000001\tsystem\t00000003\t<none>\n", err: true},
		{name: "bad flags", in: "00004096\tzz\t00080007\t00000001\tsystem\t00000003\t<none>\n", err: true},
		{name: "bad mode", in: "00004096\t00000002\t-\t00000001\tsystem\t00000003\t<none>\n", err: true},
		{name: "bad count", in: "00004096\t00000002\t00080007\tx\tsystem\t00000003\t<none>\n", err: true},
		{name: "bad inode", in: "00004096\t00000002\t00080007\t00000001\tsystem\tino\t<none>\n", err: true},
		{name: "too few fields", in: "00004096\t00000002\n", err: true},
		{name: "size overflows", in: "99999999999999999999\t00000002\t00080007\t00000001\tsystem\t00000003\t<none>\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBufinfo([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// formatMapping writes m as the kernel would.
func formatMapping(m Mapping) string {
	return fmt.Sprintf("%08x-%08x %s %08x %s %d                          %s%s\n",
		m.Start, m.End, m.Perms, m.Offset, m.Dev, m.Inode, dmabufPathPrefix, m.Name)
}

func FuzzParseMaps(f *testing.F) {
	for _, k := range kernels {
		f.Add(readCapture(f, k)["maps"])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		maps, err := ParseMaps(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, m := range maps {
			if m.End < m.Start || len(m.Perms) != 4 || strings.ContainsRune(m.Name, '\n') {
				t.Fatalf("implausible mapping %+v", m)
			}
			// What the parser read, written back the kernel's way, reads
			// the same.
			again, err := ParseMaps([]byte(formatMapping(m)))
			if err != nil || len(again) != 1 || again[0] != m {
				t.Fatalf("round trip of %+v: %+v, %v", m, again, err)
			}
		}
	})
}

func FuzzParseBufinfo(f *testing.F) {
	for _, k := range kernels {
		f.Add(readCapture(f, k)["bufinfo"])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bi, err := ParseBufinfo(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, b := range bi.Buffers {
			if b.Size < 0 || b.Name == bufinfoNoName {
				t.Fatalf("implausible entry %+v", b)
			}
			for _, s := range append(b.Devices, b.Fences...) {
				if strings.ContainsRune(s, '\n') {
					t.Fatalf("line %q holds a newline", s)
				}
			}
		}
	})
}

// The scan's allocation-free fdinfo parser says what dmabuf.ParseFDInfo
// says, on every input.
func FuzzParseFDInfoFast(f *testing.F) {
	for _, k := range kernels {
		for name, data := range readCapture(f, k) {
			if strings.HasPrefix(name, "fdinfo/") {
				f.Add(data)
			}
		}
	}
	for _, s := range []string{
		"size:\t4096\nsize:\t8192\nexp_name:\tsystem\n",
		"size: 4096\nexp_name:\tsystem\n",
		"flags:\t02000002\nflags:\t9\n",
		"flags:\t77777777777\n",
		"size:\t9223372036854775808\nexp_name:\tx\n",
		"count:\t-1\nexp_name:\tx\n",
		"name:\nexp_name:system\n",
		"ino:\t\nexp_name:\tx\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErr := dmabuf.ParseFDInfo(data)
		got, err := parseFDInfo(data, interner{})
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("error %v, ParseFDInfo's %v", err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("(-ParseFDInfo +fast):\n%s", diff)
		}
	})
}
