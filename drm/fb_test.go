package drm

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultLayout(t *testing.T) {
	xr := func(w, h uint32) Layout {
		return Layout{Width: w, Height: h, Format: FormatXRGB8888, Pitch: w * 4, Modifier: ModLinear}
	}
	for _, tc := range []struct {
		size int64
		want Layout
	}{
		{0, Layout{Format: FormatXRGB8888}},
		{3, Layout{Format: FormatXRGB8888}},
		{4, xr(1, 1)},
		{100, xr(5, 5)},
		{4096, xr(32, 32)},
		{1 << 20, xr(512, 512)},
		{8 << 20, xr(1440, 1456)},
		{64 << 20, xr(2048, 2048)},
		{1 << 40, xr(2048, 2048)},
	} {
		got := DefaultLayout(tc.size)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("DefaultLayout(%d) (-want +got):\n%s", tc.size, diff)
		}
		if got.Width > 0 {
			if _, err := got.Validate(tc.size); err != nil {
				t.Errorf("DefaultLayout(%d) does not fit: %v", tc.size, err)
			}
		}
	}
}

func TestLayoutValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Layout
		size int64
		want Layout
		bad  bool
	}{
		{"defaults", Layout{Width: 64, Height: 64}, 16384, Layout{Width: 64, Height: 64, Format: FormatXRGB8888, Pitch: 256}, false},
		{"exact fit with offset", Layout{Width: 64, Height: 2, Pitch: 512, Offset: 100}, 100 + 512 + 256,
			Layout{Width: 64, Height: 2, Format: FormatXRGB8888, Pitch: 512, Offset: 100}, false},
		{"one byte short", Layout{Width: 64, Height: 2, Pitch: 512, Offset: 100}, 100 + 512 + 255, Layout{}, true},
		{"no pixels", Layout{Width: 64}, 1 << 20, Layout{}, true},
		{"unknown format needs a pitch", Layout{Width: 64, Height: 64, Format: FourCC('N', 'V', '1', '2')}, 1 << 20, Layout{}, true},
		{"unknown format with pitch is not size-checked", Layout{Width: 64, Height: 64, Format: FourCC('N', 'V', '1', '2'), Pitch: 64}, 1,
			Layout{Width: 64, Height: 64, Format: FourCC('N', 'V', '1', '2'), Pitch: 64}, false},
		{"huge width", Layout{Width: 1 << 31, Height: 1}, 1 << 40, Layout{}, true},
		{"short pitch is the kernel's to refuse", Layout{Width: 64, Height: 64, Pitch: 16}, 1 << 20,
			Layout{Width: 64, Height: 64, Format: FormatXRGB8888, Pitch: 16}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.l.Validate(tc.size)
			if tc.bad {
				if !errors.Is(err, ErrBadLayout) {
					t.Errorf("err = %v, want ErrBadLayout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompleteLayout(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Layout
		size int64
		want Layout
	}{
		{"zero", Layout{}, 1 << 20, DefaultLayout(1 << 20)},
		{"RGB565", Layout{Format: FormatRGB565}, 1 << 20, Layout{Width: 720, Height: 728, Format: FormatRGB565, Pitch: 1440}},
		{"offset", Layout{Offset: 4096}, 4096 + 4096, Layout{Width: 32, Height: 32, Format: FormatXRGB8888, Pitch: 128, Offset: 4096}},
		{"wide pitch", Layout{Pitch: 4096}, 1 << 20, Layout{Width: 512, Height: 256, Format: FormatXRGB8888, Pitch: 4096}},
		{"invalid modifier kept", Layout{Modifier: ModInvalid}, 4096, Layout{Width: 32, Height: 32, Format: FormatXRGB8888, Pitch: 128, Modifier: ModInvalid}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := completeLayout(tc.l, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("completeLayout (-want +got):\n%s", diff)
			}
			if _, err := got.Validate(tc.size); err != nil {
				t.Errorf("completed layout does not fit: %v", err)
			}
		})
	}
	if _, err := completeLayout(Layout{Format: FourCC('N', 'V', '1', '2')}, 1<<20); !errors.Is(err, ErrBadLayout) {
		t.Errorf("NV12 without size: err = %v, want ErrBadLayout", err)
	}
}
