package drm

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFormatText(t *testing.T) {
	for _, tc := range []struct {
		f          Format
		str, name  string
		cpp        uint32
		parseInput string
	}{
		{FormatXRGB8888, "XR24", "XRGB8888", 4, "XRGB8888"},
		{FormatRGB565, "RG16", "RGB565", 2, "rgb565"},
		{FormatXRGB16161616, "XR48", "XRGB16161616", 8, "XR48"},
		{FourCC('N', 'V', '1', '2'), "NV12", "NV12", 0, "NV12"},
		{FormatXRGB8888 | fourccBigEndian, "XR24_BE", "XR24_BE", 0, "XR24_BE"},
		{Format(0x00000001), "0x00000001", "0x00000001", 0, "0x00000001"},
	} {
		if got := tc.f.String(); got != tc.str {
			t.Errorf("%#x.String() = %q, want %q", uint32(tc.f), got, tc.str)
		}
		if got := tc.f.Name(); got != tc.name {
			t.Errorf("%#x.Name() = %q, want %q", uint32(tc.f), got, tc.name)
		}
		if cpp, ok := tc.f.BytesPerPixel(); cpp != tc.cpp || ok != (tc.cpp != 0) {
			t.Errorf("%v.BytesPerPixel() = %d, %v, want %d", tc.f, cpp, ok, tc.cpp)
		}
		for _, in := range []string{tc.str, tc.parseInput} {
			if got, err := ParseFormat(in); err != nil || got != tc.f {
				t.Errorf("ParseFormat(%q) = %v, %v; want %v", in, got, err, tc.f)
			}
		}
	}
	for _, bad := range []string{"", "XR2", "XRGB88888", "0xzz"} {
		if _, err := ParseFormat(bad); err == nil {
			t.Errorf("ParseFormat(%q): no error", bad)
		}
	}
}

func TestModifierText(t *testing.T) {
	for _, tc := range []struct {
		m   Modifier
		str string
	}{
		{ModLinear, "LINEAR"},
		{ModInvalid, "INVALID"},
		{modTTiled, "BROADCOM:0x0700000000000001"},
		{Modifier(0x0100000000000002), "INTEL:0x0100000000000002"},
		{Modifier(0xfe00000000000001), "0xfe00000000000001"},
	} {
		if got := tc.m.String(); got != tc.str {
			t.Errorf("%#x.String() = %q, want %q", uint64(tc.m), got, tc.str)
		}
		if got, err := ParseModifier(tc.str); err != nil || got != tc.m {
			t.Errorf("ParseModifier(%q) = %v, %v; want %v", tc.str, got, err, tc.m)
		}
	}
	if _, err := ParseModifier("TILED"); err == nil {
		t.Error("ParseModifier(TILED): no error")
	}
}

// Formats and modifiers are JSON map keys and values in heapctl output.
func TestFormatModifiersJSON(t *testing.T) {
	fm := FormatModifiers{FormatXRGB8888: {ModLinear, modTTiled}, FormatRGB565: {}}
	b, err := json.Marshal(fm)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"RG16":[],"XR24":["LINEAR","BROADCOM:0x0700000000000001"]}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	var back FormatModifiers
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fm, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}
