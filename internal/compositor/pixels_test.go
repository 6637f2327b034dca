package compositor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image/color"
	"image/png"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/internal/testutil"
)

func TestPatternPixel(t *testing.T) {
	if p := PatternPixel(0, 0, 0); p != 0xff000020 {
		t.Errorf("PatternPixel(0,0,0) = %08x", p)
	}
	if p := PatternPixel(300, 40, 0); p != 0xff2c2820 || PatternPixel(32, 0, 0) != 0xff2000e0 {
		t.Errorf("PatternPixel(300,40,0) = %08x", p)
	}
	// Every red and green byte value occurs on a 256x256 image, X is 0xff.
	reds, greens := map[uint32]bool{}, map[uint32]bool{}
	for y := range 256 {
		for x := range 256 {
			p := PatternPixel(x, y, 7)
			if p>>24 != 0xff {
				t.Fatalf("X byte of (%d,%d) = %#x", x, y, p>>24)
			}
			reds[p>>16&0xff], greens[p>>8&0xff] = true, true
		}
	}
	if len(reds) != 256 || len(greens) != 256 {
		t.Errorf("%d red and %d green values, want 256 each", len(reds), len(greens))
	}
	if PatternPixel(5, 5, 1) == PatternPixel(5, 5, 2) || PatternPixel(5, 5, 1<<16) == PatternPixel(5, 5, 2<<16) {
		t.Error("seeds do not change the pattern")
	}
}

// image returns w x h XRGB8888 pixels with the pattern, in a layout with
// the given pitch (0: tight) and offset.
func patternBytes(w, h, pitch, offset int, seed uint32) ([]byte, drm.Layout) {
	if pitch == 0 {
		pitch = 4 * w
	}
	l := drm.Layout{Width: uint32(w), Height: uint32(h), Format: drm.FormatXRGB8888, Pitch: uint32(pitch), Offset: uint32(offset)}
	pix := bytes.Repeat([]byte{0xee}, offset+pitch*h)
	FillPatternBytes(pix, l, seed)
	return pix, l
}

func TestCompare(t *testing.T) {
	want, wl := patternBytes(40, 30, 0, 0, 1)
	same, sl := patternBytes(40, 30, 200, 64, 1) // another pitch and offset
	r, err := Compare(want, wl, same, sl)
	if err != nil || !r.Exact() || r.Pixels != 1200 {
		t.Fatalf("identical images: %v, %v", r, err)
	}
	if r.String() != "1200 pixels: exact match" {
		t.Errorf("String = %q", r)
	}

	// Only X bytes differ: equal, not exact (what vkms does to X).
	xonly := bytes.Clone(want)
	for i := 3; i < len(xonly); i += 4 {
		xonly[i] = 0
	}
	r, err = Compare(want, wl, xonly, wl)
	if err != nil || !r.Equal() || r.Exact() || r.XDiffers != 1200 {
		t.Errorf("X-only differences: %+v, %v", r, err)
	}

	// Colour differences are counted and the first ones listed.
	bad := bytes.Clone(want)
	for _, px := range []int{5, 41, 1199} {
		bad[4*px] ^= 0x01
	}
	r, err = Compare(want, wl, bad, wl)
	if err != nil || r.Equal() || r.Mismatched != 3 {
		t.Fatalf("3 changed pixels: %+v, %v", r, err)
	}
	wantFirst := []Mismatch{
		{X: 5, Y: 0, Want: PatternPixel(5, 0, 1), Got: PatternPixel(5, 0, 1) ^ 1},
		{X: 1, Y: 1, Want: PatternPixel(1, 1, 1), Got: PatternPixel(1, 1, 1) ^ 1},
		{X: 39, Y: 29, Want: PatternPixel(39, 29, 1), Got: PatternPixel(39, 29, 1) ^ 1},
	}
	if d := cmp.Diff(wantFirst, r.First); d != "" {
		t.Errorf("First (-want +got):\n%s", d)
	}

	// ARGB8888: alpha counts as colour.
	al, aal := wl, wl
	al.Format, aal.Format = drm.FormatARGB8888, drm.FormatARGB8888
	r, err = Compare(want, al, xonly, aal)
	if err != nil || r.Mismatched != 1200 {
		t.Errorf("ARGB alpha differences: %+v, %v", r, err)
	}

	for name, c := range map[string]struct {
		got []byte
		gl  drm.Layout
	}{
		"size":     {want, drm.Layout{Width: 30, Height: 40, Format: drm.FormatXRGB8888}},
		"format":   {want, al},
		"short":    {want[:100], wl},
		"modifier": {want, drm.Layout{Width: 40, Height: 30, Format: drm.FormatXRGB8888, Modifier: drm.ModInvalid}},
		"rgb565":   {want, drm.Layout{Width: 40, Height: 30, Format: drm.FormatRGB565}},
	} {
		if _, err := Compare(want, wl, c.got, c.gl); err == nil {
			t.Errorf("%s: Compare accepted it", name)
		}
	}
	if _, err := Compare(want, drm.Layout{Width: 40, Height: 30, Format: drm.FormatRGB565}, want, wl); !errors.Is(err, ErrUnsupportedLayout) {
		t.Errorf("RGB565: %v, want ErrUnsupportedLayout", err)
	}
}

func TestImageAndPNG(t *testing.T) {
	pix, l := patternBytes(33, 17, 140, 8, 3)
	img, err := Image(pix, l)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	dec, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := dec.Bounds(); b.Dx() != 33 || b.Dy() != 17 {
		t.Fatalf("decoded %v", b)
	}
	for _, pt := range [][2]int{{0, 0}, {32, 16}, {10, 5}} {
		p := PatternPixel(pt[0], pt[1], 3)
		want := color.NRGBA{R: byte(p >> 16), G: byte(p >> 8), B: byte(p), A: 0xff}
		if got := color.NRGBAModel.Convert(dec.At(pt[0], pt[1])); got != want {
			t.Errorf("(%d,%d) = %v, want %v", pt[0], pt[1], got, want)
		}
	}
	// XRGB ignores X; ARGB keeps alpha unpremultiplied.
	binary.LittleEndian.PutUint32(pix[8:], 0x10203040)
	img, _ = Image(pix, l)
	if got := color.NRGBAModel.Convert(img.At(0, 0)); got != (color.NRGBA{0x20, 0x30, 0x40, 0xff}) {
		t.Errorf("XRGB 0x10203040 -> %v", got)
	}
	l.Format = drm.FormatARGB8888
	img, _ = Image(pix, l)
	if got := color.NRGBAModel.Convert(img.At(0, 0)); got != (color.NRGBA{0x20, 0x30, 0x40, 0x10}) {
		t.Errorf("ARGB 0x10203040 -> %v", got)
	}
	if _, err := Image(pix[:10], l); err == nil {
		t.Error("Image accepted a short buffer")
	}
}

// The buffer helpers on an emulated (memfd) buffer, which needs no device.
func TestBufferHelpers(t *testing.T) {
	testutil.CheckFDs(t)
	l := drm.Layout{Width: 64, Height: 48}
	a, err := emulated.Alloc(64*48*4, "compositor-a")
	if err != nil {
		t.Skipf("emulated buffers unavailable: %v", err)
	}
	defer a.Close()
	b, err := emulated.Alloc(64*48*4, "compositor-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := FillPattern(a, l, 9); err != nil {
		t.Fatal(err)
	}
	if err := FillPattern(b, l, 9); err != nil {
		t.Fatal(err)
	}
	r, err := CompareBuffers(a, l, b, l)
	if err != nil || !r.Exact() {
		t.Fatalf("CompareBuffers of equal patterns: %v, %v", r, err)
	}
	if err := FillPattern(b, l, 10); err != nil {
		t.Fatal(err)
	}
	if r, err := CompareBuffers(a, l, b, l); err != nil || r.Equal() {
		t.Errorf("CompareBuffers of different seeds: %v, %v", r, err)
	}
	var out bytes.Buffer
	if err := WritePNG(&out, a, l); err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&out)
	if err != nil || cfg.Width != 64 || cfg.Height != 48 {
		t.Errorf("PNG config %+v, %v", cfg, err)
	}
	if err := FillPattern(a, drm.Layout{Width: 65, Height: 48}, 0); !errors.Is(err, drm.ErrBadLayout) {
		t.Errorf("FillPattern with a layout too large: %v", err)
	}
	if _, err := ReadPixels(nil, l); err == nil {
		t.Error("ReadPixels(nil) succeeded")
	}
}

func TestClosedScreen(t *testing.T) {
	var s *Screen
	if err := s.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
	if _, err := s.Capture(t.Context(), nil, drm.Layout{}); !errors.Is(err, ErrClosed) {
		t.Errorf("nil Capture: %v", err)
	}
	if _, err := s.Flip(t.Context(), nil, drm.Layout{}, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("nil Flip: %v", err)
	}
	if _, err := Show(nil, nil, drm.Layout{}); err == nil {
		t.Error("Show(nil) succeeded")
	}
	if s.String() != "<nil compositor.Screen>" || s.Mode() != (drm.Mode{}) || s.Framebuffer() != 0 {
		t.Error("nil accessors")
	}
}

func TestFlipStatsString(t *testing.T) {
	s := FlipStats{Frames: 120, Elapsed: 2010e6, FlipsPerSecond: 59.7, KernelFlipsPerSecond: 60, RefreshHz: 60, Missed: 1}
	if got := s.String(); got != "120 flips in 2.01s: 59.7 flips/s (kernel 60.0) at 60.00 Hz, 1 missed" {
		t.Errorf("String = %q", got)
	}
}
