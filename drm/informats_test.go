package drm

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	modTTiled  Modifier = 0x0700000000000001 // DRM_FORMAT_MOD_BROADCOM_VC4_T_TILED
	modSand128 Modifier = 0x0700000000000004 // DRM_FORMAT_MOD_BROADCOM_SAND128
)

// inFormatsMod is one struct drm_format_modifier.
type inFormatsMod struct {
	mask   uint64
	offset uint32
	mod    Modifier
}

// encodeInFormats builds an IN_FORMATS blob the way the kernel does
// (create_in_format_blob): header, formats, then 8-aligned modifiers.
func encodeInFormats(formats []Format, mods []inFormatsMod) []byte {
	ne := binary.NativeEndian
	b := make([]byte, inFormatsHeaderSize)
	ne.PutUint32(b[0:], inFormatsVersion)
	ne.PutUint32(b[8:], uint32(len(formats)))
	ne.PutUint32(b[12:], inFormatsHeaderSize)
	for _, f := range formats {
		b = ne.AppendUint32(b, uint32(f))
	}
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	ne.PutUint32(b[16:], uint32(len(mods)))
	ne.PutUint32(b[20:], uint32(len(b)))
	for _, m := range mods {
		b = ne.AppendUint64(b, m.mask)
		b = ne.AppendUint32(b, m.offset)
		b = ne.AppendUint32(b, 0)
		b = ne.AppendUint64(b, uint64(m.mod))
	}
	return b
}

func littleEndianHost(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("testdata blobs are little-endian (as captured on x86-64 and arm)")
	}
}

// Blobs in testdata/informats as the kernel's IN_FORMATS of vkms (Linux 6.1)
// and of a vc4-like plane with tiled and SAND modifiers.
func TestParseInFormatsTestdata(t *testing.T) {
	littleEndianHost(t)
	nv12, p030 := FourCC('N', 'V', '1', '2'), FourCC('P', '0', '3', '0')
	for _, tc := range []struct {
		file string
		want FormatModifiers
	}{
		{"vkms-primary.bin", FormatModifiers{
			FormatXRGB8888: {ModLinear}, FormatXRGB16161616: {ModLinear}, FormatRGB565: {ModLinear},
		}},
		{"vkms-cursor.bin", FormatModifiers{
			FormatARGB8888: {ModLinear}, FormatXRGB8888: {ModLinear}, FormatXRGB16161616: {ModLinear},
			FormatARGB16161616: {ModLinear}, FormatRGB565: {ModLinear},
		}},
		{"vc4-like.bin", FormatModifiers{
			FormatXRGB8888: {ModLinear, modTTiled}, FormatARGB8888: {ModLinear, modTTiled},
			FormatABGR8888: {ModLinear, modTTiled}, FormatXBGR8888: {ModLinear, modTTiled},
			FormatRGB565: {ModLinear, modTTiled}, nv12: {ModLinear, modSand128}, p030: {ModLinear, modSand128},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "informats", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseInFormats(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseInFormats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseInFormats(t *testing.T) {
	valid := encodeInFormats([]Format{FormatXRGB8888, FormatRGB565}, []inFormatsMod{{0x3, 0, ModLinear}, {0x1, 0, modTTiled}})
	badVersion := slices.Clone(valid)
	binary.NativeEndian.PutUint32(badVersion[0:], 2)
	for _, tc := range []struct {
		name    string
		blob    []byte
		want    FormatModifiers
		wantErr bool
	}{
		{"valid", valid, FormatModifiers{FormatXRGB8888: {ModLinear, modTTiled}, FormatRGB565: {ModLinear}}, false},
		{"empty", encodeInFormats(nil, nil), FormatModifiers{}, false},
		{"format without modifier", encodeInFormats([]Format{FormatXRGB8888, FormatRGB565}, []inFormatsMod{{0x1, 0, ModLinear}}),
			FormatModifiers{FormatXRGB8888: {ModLinear}, FormatRGB565: {}}, false},
		{"offset selects later formats", encodeInFormats([]Format{FormatXRGB8888, FormatRGB565, FormatARGB8888}, []inFormatsMod{{0x3, 1, ModLinear}}),
			FormatModifiers{FormatXRGB8888: {}, FormatRGB565: {ModLinear}, FormatARGB8888: {ModLinear}}, false},
		{"duplicate entries merge", encodeInFormats([]Format{FormatXRGB8888, FormatXRGB8888}, []inFormatsMod{{0x3, 0, ModLinear}, {0x1, 0, ModLinear}}),
			FormatModifiers{FormatXRGB8888: {ModLinear}}, false},
		{"nil", nil, nil, true},
		{"short header", valid[:23], nil, true},
		{"version 2", badVersion, nil, true},
		{"truncated modifiers", valid[:len(valid)-1], nil, true},
		{"mask past formats", encodeInFormats([]Format{FormatXRGB8888}, []inFormatsMod{{0x2, 0, ModLinear}}), nil, true},
		{"offset past formats", encodeInFormats([]Format{FormatXRGB8888}, []inFormatsMod{{0x1, 1, ModLinear}}), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInFormats(tc.blob)
			if tc.wantErr {
				if !errors.Is(err, ErrBadBlob) {
					t.Errorf("err = %v, want ErrBadBlob", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseInFormats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFormatModifiersSupports(t *testing.T) {
	fm := FormatModifiers{FormatXRGB8888: {ModLinear, modTTiled}, FormatRGB565: {}}
	for _, tc := range []struct {
		f    Format
		m    Modifier
		want bool
	}{
		{FormatXRGB8888, ModLinear, true},
		{FormatXRGB8888, modTTiled, true},
		{FormatXRGB8888, modSand128, false},
		{FormatRGB565, ModLinear, false},
		{FormatARGB8888, ModLinear, false},
	} {
		if got := fm.Supports(tc.f, tc.m); got != tc.want {
			t.Errorf("Supports(%v, %v) = %v, want %v", tc.f, tc.m, got, tc.want)
		}
	}
	if FormatModifiers(nil).Supports(FormatXRGB8888, ModLinear) {
		t.Error("nil map supports something")
	}
	if diff := cmp.Diff([]Format{FormatXRGB8888, FormatRGB565}, fm.Formats()); diff != "" {
		t.Errorf("Formats (-want +got):\n%s", diff)
	}
}

// FuzzParseInFormats: the parser never panics, and what it accepts is
// consistent: every modifier it reports is listed once per format, and
// re-encoding the result (one mask per modifier) parses back to the same map.
func FuzzParseInFormats(f *testing.F) {
	f.Add(encodeInFormats([]Format{FormatXRGB8888}, []inFormatsMod{{1, 0, ModLinear}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fm, err := ParseInFormats(b)
		if err != nil {
			if fm != nil || !errors.Is(err, ErrBadBlob) {
				t.Fatalf("error %v with result %v", err, fm)
			}
			return
		}
		formats := fm.Formats()
		var mods []inFormatsMod
		for i, f := range formats {
			seen := map[Modifier]bool{}
			for _, m := range fm[f] {
				if seen[m] {
					t.Fatalf("%v lists %v twice", f, m)
				}
				seen[m] = true
				mods = append(mods, inFormatsMod{1 << (i % 64), uint32(i - i%64), m})
			}
		}
		again, err := ParseInFormats(encodeInFormats(formats, mods))
		if err != nil {
			t.Fatalf("re-encoded blob: %v", err)
		}
		if len(again) != len(fm) {
			t.Fatalf("round trip: %d formats, want %d", len(again), len(fm))
		}
		for f, ms := range fm {
			want := slices.Clone(ms)
			got := slices.Clone(again[f])
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(want, got) {
				t.Fatalf("round trip %v: %v, want %v", f, got, want)
			}
		}
	})
}
