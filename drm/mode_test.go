package drm

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// vkms's preferred mode (DMT 1024x768@60), as the kernel reports it.
var mode1024 = Mode{
	Name: "1024x768", Clock: 65000,
	HDisplay: 1024, HSyncStart: 1048, HSyncEnd: 1184, HTotal: 1344,
	VDisplay: 768, VSyncStart: 771, VSyncEnd: 777, VTotal: 806,
	VRefresh: 60, Flags: 0xa, Type: 0x48,
}

func TestModeBlobEncoding(t *testing.T) {
	b, err := mode1024.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"len", uint64(len(b)), 68},
		{"clock", uint64(ne.Uint32(b[0:])), 65000},
		{"hdisplay", uint64(ne.Uint16(b[4:])), 1024},
		{"hsync_start", uint64(ne.Uint16(b[6:])), 1048},
		{"hsync_end", uint64(ne.Uint16(b[8:])), 1184},
		{"htotal", uint64(ne.Uint16(b[10:])), 1344},
		{"hskew", uint64(ne.Uint16(b[12:])), 0},
		{"vdisplay", uint64(ne.Uint16(b[14:])), 768},
		{"vsync_start", uint64(ne.Uint16(b[16:])), 771},
		{"vsync_end", uint64(ne.Uint16(b[18:])), 777},
		{"vtotal", uint64(ne.Uint16(b[20:])), 806},
		{"vscan", uint64(ne.Uint16(b[22:])), 0},
		{"vrefresh", uint64(ne.Uint32(b[24:])), 60},
		{"flags", uint64(ne.Uint32(b[28:])), 0xa},
		{"type", uint64(ne.Uint32(b[32:])), 0x48},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	if name := string(b[36:44]); name != "1024x768" || b[44] != 0 {
		t.Errorf("name bytes % x", b[36:])
	}
	var back Mode
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(mode1024, back); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if err := back.UnmarshalBinary(b[:60]); err == nil {
		t.Error("UnmarshalBinary accepted 60 bytes")
	}
	// A name of 32 bytes or more is cut to 31 plus NUL.
	long := mode1024
	long.Name = "0123456789abcdef0123456789abcdefXYZ"
	b, _ = long.MarshalBinary()
	if b[36+31] != 0 || string(b[36:36+31]) != long.Name[:31] {
		t.Errorf("long name bytes % x", b[36:])
	}
}

func TestModeRefresh(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Mode
		want float64
	}{
		{"1024x768@60", mode1024, 65e6 / (1344 * 806)},
		{"interlaced", Mode{Clock: 74250, HTotal: 2200, VTotal: 1125, Flags: 1 << 4}, 60},
		{"double scan", Mode{Clock: 25175, HTotal: 800, VTotal: 525, Flags: 1 << 5}, 25175e3 / (800 * 525) / 2},
		{"vscan 2", Mode{Clock: 25175, HTotal: 800, VTotal: 525, VScan: 2}, 25175e3 / (800 * 525) / 2},
		{"no timings", Mode{Clock: 1}, 0},
	} {
		if got := tc.m.Refresh(); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: Refresh = %v, want %v", tc.name, got, tc.want)
		}
	}
	if s := mode1024.String(); s != "1024x768@60.00" {
		t.Errorf("String = %q", s)
	}
	if w, h := mode1024.Size(); w != 1024 || h != 768 || !mode1024.Preferred() {
		t.Errorf("Size %dx%d Preferred %v", w, h, mode1024.Preferred())
	}
}

func TestConnectorModes(t *testing.T) {
	m75 := Mode{Name: "1024x768", HDisplay: 1024, VDisplay: 768, Clock: 78750, HTotal: 1312, VTotal: 800}
	m85 := Mode{Name: "1024x768", HDisplay: 1024, VDisplay: 768, Clock: 94500, HTotal: 1376, VTotal: 808}
	m640 := Mode{Name: "640x480", HDisplay: 640, VDisplay: 480}
	c := &ConnectorInfo{Modes: []Mode{m85, mode1024, m75, m640}}
	if m, ok := c.PreferredMode(); !ok || m != mode1024 {
		t.Errorf("PreferredMode = %v, %v", m, ok)
	}
	if m, ok := c.FindMode(1024, 768); !ok || m != mode1024 {
		t.Errorf("FindMode(1024, 768) = %v, want the preferred one", m)
	}
	if m, ok := c.FindMode(640, 480); !ok || m != m640 {
		t.Errorf("FindMode(640, 480) = %v, %v", m, ok)
	}
	if _, ok := c.FindMode(800, 600); ok {
		t.Error("FindMode(800, 600) found a mode")
	}
	noPref := &ConnectorInfo{Modes: []Mode{m85, m75}}
	if m, ok := noPref.PreferredMode(); !ok || m != m85 {
		t.Errorf("PreferredMode without a preferred mode = %v, want the first", m)
	}
	if m, ok := noPref.FindMode(1024, 768); !ok || m != m85 {
		t.Errorf("FindMode without a preferred mode = %v, want the first", m)
	}
	var nilc *ConnectorInfo
	if _, ok := nilc.PreferredMode(); ok {
		t.Error("nil PreferredMode found a mode")
	}
	if _, ok := nilc.FindMode(1, 1); ok {
		t.Error("nil FindMode found a mode")
	}
}

func TestConnectorTypeStrings(t *testing.T) {
	for typ, want := range map[ConnectorType]string{
		0: "Unknown", 11: "HDMI-A", ConnectorVirtual: "Virtual", ConnectorWriteback: "Writeback", 20: "USB", 99: "ConnectorType(99)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("ConnectorType(%d) = %q, want %q", uint32(typ), got, want)
		}
	}
	for s, want := range map[ConnectionStatus]string{Connected: "connected", Disconnected: "disconnected", UnknownConnection: "unknown", 7: "ConnectionStatus(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", uint32(s), got, want)
		}
	}
	for o, want := range map[ObjectType]string{ObjectCRTC: "crtc", ObjectConnector: "connector", ObjectPlane: "plane", 1: "ObjectType(0x1)"} {
		if got := o.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint32(o), got, want)
		}
	}
}

func TestPropertiesLookup(t *testing.T) {
	p := &Properties{Object: 5, Type: ObjectPlane, List: []Property{{ID: 10, Name: "FB_ID", Value: 3}, {ID: 11, Name: "type", Value: 1}}}
	if p.ID("FB_ID") != 10 || p.ID("nope") != 0 {
		t.Errorf("ID: %d %d", p.ID("FB_ID"), p.ID("nope"))
	}
	if v, ok := p.Value("type"); !ok || v != 1 {
		t.Errorf("Value(type) = %d, %v", v, ok)
	}
	var nilp *Properties
	if _, ok := nilp.Lookup("FB_ID"); ok || nilp.ID("FB_ID") != 0 {
		t.Error("nil Properties found a property")
	}
}

func FuzzModeUnmarshal(f *testing.F) {
	b, _ := mode1024.MarshalBinary()
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Mode
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		again, _ := m.MarshalBinary()
		var m2 Mode
		if err := m2.UnmarshalBinary(again); err != nil || m2 != m {
			t.Fatalf("re-encoding %+v gave %+v, %v", m, m2, err)
		}
	})
}
