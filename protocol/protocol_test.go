package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the fuzz seed corpus")

// samples are one canonical message of every type, with the serial they
// are sent with. The golden files and docs/protocol.md show these bytes.
func samples() []struct {
	name   string
	serial uint32
	m      Message
} {
	return []struct {
		name   string
		serial uint32
		m      Message
	}{
		{"hello", 1, &Hello{Major: 1, Minor: 0, Features: FeatureImage | FeatureBatch | FeatureEvents | FeatureUsage}},
		{"hello_reply", 1, &HelloReply{Major: 1, Minor: 0, Features: FeatureImage | FeatureBatch | FeatureEvents | FeatureUsage,
			UptimeMillis: 5000, MaxBatch: 16, MaxInFlight: 4, MaxMessage: MaxMessageSize, Server: "heapd 1.0"}},
		{"list_heaps", 2, &ListHeaps{}},
		{"heaps", 2, &Heaps{Heaps: []HeapInfo{{Name: "system", Backend: "kernel", Target: "/dev/dma_heap/system",
			KernelName: "system", Device: "", Note: "", Flags: HeapDeviceImportable, MaxSize: 0}}, Problems: nil}},
		{"allocate_size", 3, &Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 1 << 20, Heap: "system", Label: "fb"}},
		{"allocate_image", 4, &Allocate{Target: TargetHeap, Shape: ShapeImage, Count: 2,
			Image: Image{Width: 640, Height: 480, Format: 0x34325258, Modifier: ModifierInvalid}, Heap: "contiguous"}},
		{"allocate_devices", 5, &Allocate{Target: TargetDevices, Shape: ShapeSize, Count: 1, Size: 4096, Devices: []string{"platform-vkms"}}},
		{"allocated", 4, &Allocated{Flags: BufferContiguous | BufferDeviceImportable, Size: 1228800,
			Layout: Layout{Width: 640, Height: 480, Format: 0x34325258, Pitch: 2560, Modifier: ModifierLinear},
			Heap:   "contiguous", Backend: "kernel", Name: "heapd:uid1000:weston", IDs: []uint64{7, 8}}},
		{"my_usage", 6, &MyUsage{}},
		{"usage", 6, &Usage{UID: 1000, GID: 1000, PID: 4242, Groups: []uint32{44, 109}, Comm: "weston",
			Bytes: 0, Buffers: 0, LimitBytes: Unlimited, LimitBuffers: Unlimited, MaxAlloc: Unlimited,
			TotalBytes: 1 << 20, TotalBuffers: 1,
			Heaps:  []HeapUsage{{Heap: "system", Bytes: 0, Buffers: 0, LimitBytes: Unlimited, LimitBuffers: Unlimited}},
			Policy: "built-in"}},
		{"subscribe", 7, &Subscribe{Mask: EventsHeaps}},
		{"subscribed", 7, &Subscribed{Mask: EventsHeaps}},
		{"event", 0, &Event{Seq: 1, Kind: EventHeapAdded, Name: "contiguous"}},
		{"error", 3, &Error{Code: CodeUnknownHeap, Message: "no heap named \"x\""}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			b, err := Encode(s.serial, s.m)
			if err != nil {
				t.Fatal(err)
			}
			h, m, err := Decode(b, s.m.NumFDs())
			if err != nil {
				t.Fatal(err)
			}
			want := Header{Type: s.m.Type(), NFDs: uint16(s.m.NumFDs()), Serial: s.serial, Length: uint32(len(b) - HeaderSize)}
			if diff := cmp.Diff(want, h); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(s.m, m); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGolden pins the encoding byte for byte. Run with -update after a
// deliberate change (and update docs/protocol.md, which shows the same
// bytes).
func TestGolden(t *testing.T) {
	for _, s := range samples() {
		b, err := Encode(s.serial, s.m)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "golden", s.name+".hex")
		if *update {
			if err := os.WriteFile(path, []byte(hexDump(b)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), hexDump(b)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
		if *update {
			writeSeeds(t, s.name, b, s.m.NumFDs())
		}
	}
}

// writeSeeds writes the fuzz seed corpus for one sample: the message, and
// versions truncated in the body and cut inside the header.
func writeSeeds(t *testing.T, name string, b []byte, nfds int) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{name: b, name + "_truncated": b[:len(b)-1], name + "_header_only": b[:HeaderSize]}
	for n, data := range seeds {
		text := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbyte(%q)\n", data, byte(nfds))
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// hexDump renders b as 16 space-separated hex bytes per line.
func hexDump(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		line := b[i:min(i+16, len(b))]
		for j, c := range line {
			if j > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(hex.EncodeToString([]byte{c}))
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// parseHex reads a hexDump back.
func parseHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDocMatchesGolden checks that every example in docs/protocol.md
// (a "<!-- golden:NAME -->" marker followed by a code block) shows the
// golden bytes.
func TestDocMatchesGolden(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Skipf("docs/protocol.md: %v", err)
	}
	seen := 0
	text := string(doc)
	for {
		i := strings.Index(text, "<!-- golden:")
		if i < 0 {
			break
		}
		text = text[i+len("<!-- golden:"):]
		name, rest, _ := strings.Cut(text, " -->")
		start := strings.Index(rest, "```\n")
		end := strings.Index(rest[start+4:], "```")
		if start < 0 || end < 0 {
			t.Fatalf("golden:%s: no code block after the marker", name)
		}
		block := rest[start+4 : start+4+end]
		var hexPart []string
		for _, line := range strings.Split(block, "\n") {
			if k := strings.Index(line, "  "); k >= 0 { // strip annotations
				line = line[:k]
			}
			hexPart = append(hexPart, line)
		}
		got := parseHex(t, strings.Join(hexPart, " "))
		want, err := os.ReadFile(filepath.Join("testdata", "golden", name+".hex"))
		if err != nil {
			t.Fatalf("golden:%s: %v", name, err)
		}
		if !bytes.Equal(got, parseHex(t, string(want))) {
			t.Errorf("docs/protocol.md example %s differs from testdata/golden/%s.hex:\ndoc:    %x\ngolden: %x", name, name, got, parseHex(t, string(want)))
		}
		seen++
		text = rest
	}
	if seen == 0 {
		t.Error("docs/protocol.md has no golden examples")
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := func(m Message) []byte {
		b, err := Encode(9, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	alloc := valid(&Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 4096, Heap: "system"})
	hello := valid(&Hello{Major: 1})
	mutate := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		nfds int
		want string
	}{
		{"empty", nil, 0, "shorter than"},
		{"short header", hello[:10], 0, "shorter than"},
		{"truncated body", hello[:len(hello)-1], 0, "truncated"},
		{"length too big", mutate(hello, func(b []byte) []byte { b[8] = 0xff; return b }), 0, "truncated"},
		{"trailing byte", mutate(hello, func(b []byte) []byte { b[8]++; return append(b, 0) }), 0, "trailing"},
		{"oversized", append(make([]byte, 0, MaxMessageSize+1), make([]byte, MaxMessageSize+1)...), 0, "exceeds"},
		{"flags", mutate(hello, func(b []byte) []byte { b[12] = 1; return b }), 0, "flags"},
		{"unknown type", mutate(hello, func(b []byte) []byte { b[0] = 0x7f; return b }), 0, "unknown message type"},
		{"fds not carried", mutate(hello, func(b []byte) []byte { b[2] = 1; return b }), 1, "carries 0 fds"},
		{"fds missing", mutate(hello, func(b []byte) []byte { b[2] = 1; return b }), 0, "arrived"},
		{"bad magic", mutate(hello, func(b []byte) []byte { b[16] = 'X'; return b }), 0, "magic"},
		{"bad target", mutate(alloc, func(b []byte) []byte { b[16] = 9; return b }), 0, "target"},
		{"count zero", mutate(alloc, func(b []byte) []byte { b[18] = 0; return b }), 0, "count"},
		{"string past end", mutate(alloc, func(b []byte) []byte { b[52] = 0xff; return b }), 0, "need"},
		{"NUL in string", mutate(alloc, func(b []byte) []byte { b[54] = 0; return b }), 0, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m, err := Decode(tc.b, tc.nfds)
			if err == nil || m != nil {
				t.Fatalf("accepted: %#v", m)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrMalformed mentioning %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	for _, m := range []Message{
		&Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 0, Size: 1, Heap: "system"},
		&Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 1, Heap: "system", Label: strings.Repeat("x", 32)},
		&Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 1, Heap: "sys\x00tem"},
		&Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 1, Heap: "system", Image: Image{Width: 1}},
		&Allocated{},
		&Event{Kind: 99},
		&Error{},
		&HelloReply{Server: strings.Repeat("x", 300)},
	} {
		if _, err := Encode(1, m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%T %+v: got %v, want ErrMalformed", m, m, err)
		}
	}
}

func TestErrorIs(t *testing.T) {
	var err error = Errorf(CodeDenied, "uid %d", 7)
	if !errors.Is(err, CodeDenied) || errors.Is(err, CodeQuota) {
		t.Errorf("errors.Is on %v", err)
	}
	if got := err.Error(); got != "heapd: DENIED: uid 7" {
		t.Errorf("Error() = %q", got)
	}
	if Code(99).String() != "CODE_99" || Type(0x4242).String() != "Type(0x4242)" {
		t.Error("unknown names")
	}
}

// FuzzDecode: no input crashes the decoder, and whatever it accepts
// re-encodes to the same bytes (the encoding is canonical).
func FuzzDecode(f *testing.F) {
	for _, s := range samples() {
		b, err := Encode(s.serial, s.m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(s.m.NumFDs()))
	}
	f.Fuzz(func(t *testing.T, b []byte, nfds uint8) {
		h, m, err := Decode(b, int(nfds))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		again, err := Encode(h.Serial, m)
		if err != nil {
			t.Fatalf("decoded %#v does not re-encode: %v", m, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\nin:  %x\nout: %x", b, again)
		}
	})
}
