package compositor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"strings"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// ErrUnsupportedLayout means a pixel helper was given a layout other than
// 32-bit XRGB8888/ARGB8888 LINEAR.
var ErrUnsupportedLayout = errors.New("compositor: only XRGB8888 and ARGB8888 LINEAR pixels are supported")

// checkLayout completes l for a buffer of size bytes and checks that the
// helpers here understand it.
func checkLayout(l drm.Layout, size int64) (drm.Layout, error) {
	l, err := l.Validate(size)
	if err != nil {
		return l, err
	}
	if (l.Format != drm.FormatXRGB8888 && l.Format != drm.FormatARGB8888) || l.Modifier != drm.ModLinear {
		return l, fmt.Errorf("%w: %v %v", ErrUnsupportedLayout, l.Format, l.Modifier)
	}
	return l, nil
}

// pixel returns the 32-bit pixel at (x, y) of pix in layout l (validated).
func pixel(pix []byte, l drm.Layout, x, y int) uint32 {
	return binary.LittleEndian.Uint32(pix[int(l.Offset)+y*int(l.Pitch)+4*x:])
}

// PatternPixel returns the XRGB8888 test pattern's pixel at (x, y) for
// seed: red = x, green = y (mod 256, so every byte value occurs on a
// 256×256 image), blue a 32-pixel checkerboard mixed with the seed, and X
// = 0xff (what vkms writes back). Different seeds give different frames.
// A pure function, safe for concurrent use.
func PatternPixel(x, y int, seed uint32) uint32 {
	r := uint32(x+int(seed)) & 0xff
	g := uint32(y+int(seed>>8)) & 0xff
	b := uint32(0x20)
	if (x/32+y/32)%2 == 1 {
		b = 0xe0
	}
	b ^= (seed >> 16) & 0x1f
	return 0xff<<24 | r<<16 | g<<8 | b
}

// FillPattern writes the test pattern for seed into buf in layout l
// (XRGB8888 or ARGB8888 LINEAR; bytes outside the image are left alone),
// mapping buf and bracketing the writes with CPU access. buf is not taken
// over. Safe for concurrent use on different buffers.
func FillPattern(buf *dmabuf.Buffer, l drm.Layout, seed uint32) error {
	if buf == nil {
		return fmt.Errorf("compositor: FillPattern: %w", dmabuf.ErrClosed)
	}
	l, err := checkLayout(l, buf.Size())
	if err != nil {
		return fmt.Errorf("compositor: FillPattern: %w", err)
	}
	m, err := buf.Map(dmabuf.ProtReadWrite)
	if err != nil {
		return fmt.Errorf("compositor: FillPattern: %w", err)
	}
	defer m.Close()
	return buf.CPUAccess(dmabuf.Write, func() error {
		FillPatternBytes(m.Bytes(), l, seed)
		return nil
	})
}

// FillPatternBytes writes the test pattern for seed into pix in layout l,
// which must be valid for len(pix) (see drm.Layout.Validate) and 32 bits
// per pixel; it panics otherwise. A pure function.
func FillPatternBytes(pix []byte, l drm.Layout, seed uint32) {
	for y := range int(l.Height) {
		row := pix[int(l.Offset)+y*int(l.Pitch):]
		for x := range int(l.Width) {
			binary.LittleEndian.PutUint32(row[4*x:], PatternPixel(x, y, seed))
		}
	}
}

// ReadPixels returns a copy of the first Offset + Height × Pitch bytes of
// buf (layout l), read through a mapping with CPU access bracketed, so a
// device's writes (a writeback capture) are visible. buf is not taken
// over. Safe for concurrent use.
func ReadPixels(buf *dmabuf.Buffer, l drm.Layout) ([]byte, error) {
	if buf == nil {
		return nil, fmt.Errorf("compositor: ReadPixels: %w", dmabuf.ErrClosed)
	}
	l, err := l.Validate(buf.Size())
	if err != nil {
		return nil, fmt.Errorf("compositor: ReadPixels: %w", err)
	}
	n := min(int64(l.Offset)+int64(l.Height)*int64(l.Pitch), buf.Size())
	m, err := buf.Map(dmabuf.ProtRead)
	if err != nil {
		return nil, fmt.Errorf("compositor: ReadPixels: %w", err)
	}
	defer m.Close()
	out := make([]byte, n)
	err = buf.CPUAccess(dmabuf.Read, func() error {
		copy(out, m.Bytes())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compositor: ReadPixels: %w", err)
	}
	return out, nil
}

// Mismatch is one differing pixel.
type Mismatch struct {
	X, Y      int
	Want, Got uint32 // as 0xXXRRGGBB
}

// CompareResult is the outcome of a comparison.
type CompareResult struct {
	Pixels int `json:"pixels"`
	// Mismatched counts pixels whose colour differs (the alpha byte
	// included for ARGB8888, the X byte excluded for XRGB8888).
	Mismatched int `json:"mismatched"`
	// XDiffers counts XRGB8888 pixels equal in colour whose X byte differs
	// (vkms writes 0xff there whatever the source held).
	XDiffers int `json:"x_differs"`
	// First lists up to 8 mismatched pixels in scan order.
	First []Mismatch `json:"first,omitempty"`
}

// Equal reports whether every pixel has the same colour.
func (r CompareResult) Equal() bool { return r.Mismatched == 0 }

// Exact reports whether every pixel is bit for bit the same, X byte
// included.
func (r CompareResult) Exact() bool { return r.Mismatched == 0 && r.XDiffers == 0 }

// String returns "786432 pixels: exact match", or the mismatches.
func (r CompareResult) String() string {
	switch {
	case r.Exact():
		return fmt.Sprintf("%d pixels: exact match", r.Pixels)
	case r.Equal():
		return fmt.Sprintf("%d pixels: colours match, X byte differs in %d", r.Pixels, r.XDiffers)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d pixels differ", r.Mismatched, r.Pixels)
	for _, m := range r.First {
		fmt.Fprintf(&b, "; (%d,%d) want %08x got %08x", m.X, m.Y, m.Want, m.Got)
	}
	return b.String()
}

// Compare compares the image in want (layout wl) with the one in got
// (layout gl): both XRGB8888 or ARGB8888 LINEAR of the same size and
// format; pitches and offsets may differ. A pure function.
func Compare(want []byte, wl drm.Layout, got []byte, gl drm.Layout) (CompareResult, error) {
	wl, err := checkLayout(wl, int64(len(want)))
	if err != nil {
		return CompareResult{}, fmt.Errorf("compositor: Compare: want: %w", err)
	}
	gl, err = checkLayout(gl, int64(len(got)))
	if err != nil {
		return CompareResult{}, fmt.Errorf("compositor: Compare: got: %w", err)
	}
	if wl.Width != gl.Width || wl.Height != gl.Height || wl.Format != gl.Format {
		return CompareResult{}, fmt.Errorf("compositor: Compare: %dx%d %v against %dx%d %v", wl.Width, wl.Height, wl.Format, gl.Width, gl.Height, gl.Format)
	}
	colour := uint32(0xffffffff)
	if wl.Format == drm.FormatXRGB8888 {
		colour = 0x00ffffff
	}
	r := CompareResult{Pixels: int(wl.Width) * int(wl.Height)}
	for y := range int(wl.Height) {
		for x := range int(wl.Width) {
			w, g := pixel(want, wl, x, y), pixel(got, gl, x, y)
			switch {
			case w == g:
			case w&colour == g&colour:
				r.XDiffers++
			default:
				r.Mismatched++
				if len(r.First) < 8 {
					r.First = append(r.First, Mismatch{X: x, Y: y, Want: w, Got: g})
				}
			}
		}
	}
	return r, nil
}

// CompareBuffers compares two buffers like Compare, reading each with
// ReadPixels. Neither buffer is taken over.
func CompareBuffers(want *dmabuf.Buffer, wl drm.Layout, got *dmabuf.Buffer, gl drm.Layout) (CompareResult, error) {
	w, err := ReadPixels(want, wl)
	if err != nil {
		return CompareResult{}, err
	}
	g, err := ReadPixels(got, gl)
	if err != nil {
		return CompareResult{}, err
	}
	return Compare(w, wl, g, gl)
}

// Image converts pix (layout l, XRGB8888 or ARGB8888 LINEAR) into an
// image: XRGB8888 becomes opaque RGBA, ARGB8888 non-premultiplied RGBA. A
// pure function.
func Image(pix []byte, l drm.Layout) (image.Image, error) {
	l, err := checkLayout(l, int64(len(pix)))
	if err != nil {
		return nil, fmt.Errorf("compositor: Image: %w", err)
	}
	rect := image.Rect(0, 0, int(l.Width), int(l.Height))
	var img interface {
		image.Image
		Stride() int
		Bytes() []byte
	}
	if l.Format == drm.FormatARGB8888 {
		img = nrgba{image.NewNRGBA(rect)}
	} else {
		img = rgba{image.NewRGBA(rect)}
	}
	out := img.Bytes()
	for y := range int(l.Height) {
		row := out[y*img.Stride():]
		for x := range int(l.Width) {
			p := pixel(pix, l, x, y)
			a := byte(p >> 24)
			if l.Format == drm.FormatXRGB8888 {
				a = 0xff
			}
			row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = byte(p>>16), byte(p>>8), byte(p), a
		}
	}
	return img, nil
}

// rgba and nrgba give the two image types one interface for Image.
type rgba struct{ *image.RGBA }

func (i rgba) Stride() int   { return i.RGBA.Stride }
func (i rgba) Bytes() []byte { return i.Pix }

type nrgba struct{ *image.NRGBA }

func (i nrgba) Stride() int   { return i.NRGBA.Stride }
func (i nrgba) Bytes() []byte { return i.Pix }

// WritePNG writes the image in buf (layout l, XRGB8888 or ARGB8888
// LINEAR) to w as a PNG, reading buf with ReadPixels. buf is not taken
// over.
func WritePNG(w io.Writer, buf *dmabuf.Buffer, l drm.Layout) error {
	pix, err := ReadPixels(buf, l)
	if err != nil {
		return err
	}
	img, err := Image(pix, l)
	if err != nil {
		return err
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed} // TCG guests are slow
	if err := enc.Encode(w, img); err != nil {
		return fmt.Errorf("compositor: WritePNG: %w", err)
	}
	return nil
}
