package drm

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"

	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// Layout describes a single-plane framebuffer in a buffer.
type Layout struct {
	Width  uint32 `json:"width"`
	Height uint32 `json:"height"`
	// Format is the pixel format; 0 means XRGB8888.
	Format Format `json:"format"`
	// Pitch is the row stride in bytes; 0 means Width × bytes per pixel
	// (for a format this package knows).
	Pitch uint32 `json:"pitch"`
	// Offset is where the first row starts. Use 0 on vkms: Linux 6.1 and
	// 6.12 apply it twice.
	Offset uint32 `json:"offset"`
	// Modifier is the memory layout; the zero value is ModLinear.
	// ModInvalid means ADDFB2 without an explicit modifier.
	Modifier Modifier `json:"modifier"`
}

// Largest side DefaultLayout picks: every display engine heapd targets
// takes 2048 × 2048 (the Raspberry Pi 3's HVS is the smallest at 2048).
const defaultMaxSide = 2048

// DefaultLayout returns the XRGB8888 LINEAR layout the probe uses for a
// buffer of size bytes: the largest square of whole 16-pixel columns that
// fits (sides up to 2048 pixels; a wider last dimension when a 2048-pixel
// square leaves room), with a tight pitch and offset 0. A buffer under
// 4 bytes gives a zero-sized layout, which Validate rejects.
func DefaultLayout(size int64) Layout {
	l := Layout{Format: FormatXRGB8888, Modifier: ModLinear}
	l.Width, l.Height = fitSquare(size, 4)
	l.Pitch = l.Width * 4
	return l
}

// fitSquare returns the largest width × height of cpp-byte pixels, width a
// multiple of 16 when at least 16, both at most defaultMaxSide and height
// as large as the remaining bytes allow, that fits in size bytes.
func fitSquare(size int64, cpp uint32) (w, h uint32) {
	if size < int64(cpp) || cpp == 0 {
		return 0, 0
	}
	pixels := uint64(size) / uint64(cpp)
	sw := isqrt(pixels)
	if sw >= 16 {
		sw &^= 15
	}
	sw = min(sw, defaultMaxSide)
	sh := min(pixels/sw, defaultMaxSide)
	return uint32(sw), uint32(sh)
}

// isqrt returns floor(sqrt(n)).
func isqrt(n uint64) uint64 {
	r := uint64(math.Sqrt(float64(n)))
	for r*r > n {
		r--
	}
	for (r+1)*(r+1) <= n {
		r++
	}
	return r
}

// withDefaults fills Format and Pitch.
func (l Layout) withDefaults() (Layout, error) {
	if l.Format == 0 {
		l.Format = FormatXRGB8888
	}
	if l.Width == 0 || l.Height == 0 {
		return l, fmt.Errorf("%w: %dx%d has no pixels", ErrBadLayout, l.Width, l.Height)
	}
	if l.Pitch == 0 {
		cpp, ok := l.Format.BytesPerPixel()
		if !ok {
			return l, fmt.Errorf("%w: pitch 0 with format %v, whose bytes per pixel are unknown here: give a pitch", ErrBadLayout, l.Format)
		}
		if uint64(l.Width)*uint64(cpp) > math.MaxUint32 {
			return l, fmt.Errorf("%w: width %d too large", ErrBadLayout, l.Width)
		}
		l.Pitch = l.Width * cpp
	}
	return l, nil
}

// Validate fills the defaults and checks that the layout has pixels and,
// for a format this package knows, fits in a buffer of size bytes (the
// kernel's own rule: offset + (height-1) × pitch + width × bytes per pixel).
// It returns the completed layout; errors wrap ErrBadLayout.
func (l Layout) Validate(size int64) (Layout, error) {
	l, err := l.withDefaults()
	if err != nil {
		return l, err
	}
	if cpp, ok := l.Format.BytesPerPixel(); ok {
		need := uint64(l.Offset) + uint64(l.Height-1)*uint64(l.Pitch) + uint64(l.Width)*uint64(cpp)
		if size < 0 || need > uint64(size) {
			return l, fmt.Errorf("%w: %dx%d %v pitch %d offset %d needs %d bytes, the buffer has %d", ErrBadLayout, l.Width, l.Height, l.Format, l.Pitch, l.Offset, need, size)
		}
	}
	return l, nil
}

// Framebuffer is a KMS framebuffer (ADDFB2) of a Device. It holds its own
// reference to the buffer: the Handle it was made from may be closed.
//
// Close removes it (RMFB); Close is idempotent, nil-safe and safe for
// concurrent use. A Framebuffer dropped without Close is removed by a
// cleanup and the leak is counted (tests fail on it).
type Framebuffer struct {
	dev     *Device
	id      uint32
	closed  *atomic.Bool
	cleanup runtime.Cleanup
}

// AddFB2 creates a framebuffer of layout l over the buffer behind h
// (ADDFB2, with DRM_MODE_FB_MODIFIERS unless l.Modifier is ModInvalid, or
// is ModLinear on a device without modifier support). The caller must Close
// it.
//
// Errors: ErrNeedPrimary, ErrNoKMS, ErrWrongDevice for a Handle of another
// Device, ErrBadLayout for an incomplete layout, ErrNotSupported for a
// non-linear modifier on a device without modifiers, and the kernel's
// refusal (EINVAL: size limits, pitch, format, modifier or a buffer too
// small). Safe for concurrent use.
func (d *Device) AddFB2(h *Handle, l Layout) (*Framebuffer, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if err := d.check(h); err != nil {
		return nil, err
	}
	l, err := l.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("drm: AddFB2 on %s: %w", d, err)
	}
	c := uapi.DRMModeFBCmd2{Width: l.Width, Height: l.Height, PixelFormat: uint32(l.Format)}
	c.Handles[0], c.Pitches[0], c.Offsets[0] = h.id, l.Pitch, l.Offset
	switch {
	case l.Modifier == ModInvalid:
	case d.caps.AddFB2Modifiers:
		c.Flags |= uapi.DRMModeFBModifiers
		c.Modifier[0] = uint64(l.Modifier)
	case l.Modifier != ModLinear:
		return nil, fmt.Errorf("drm: AddFB2 with modifier %v on %s, which takes no modifiers: %w", l.Modifier, d, ErrNotSupported)
	}
	var fb *Framebuffer
	err = d.kmsOp("AddFB2", func(fd int) error {
		if err := uapi.DRMModeAddFB2Call(fd, &c); err != nil {
			return d.kmsErr(fmt.Sprintf("AddFB2(%dx%d %v %v pitch %d offset %d)", l.Width, l.Height, l.Format, l.Modifier, l.Pitch, l.Offset), err)
		}
		fb = d.newFramebuffer(c.FBID)
		return nil
	})
	return fb, err
}

func (d *Device) newFramebuffer(id uint32) *Framebuffer {
	fb := &Framebuffer{dev: d, id: id, closed: new(atomic.Bool)}
	type arg struct {
		dev    *Device
		id     uint32
		closed *atomic.Bool
	}
	fb.cleanup = runtime.AddCleanup(fb, func(a arg) {
		if a.closed.CompareAndSwap(false, true) {
			leak.Collected("drm framebuffer")
			_ = a.dev.rmFB(a.id)
		}
	}, arg{d, id, fb.closed})
	return fb
}

// ID returns the framebuffer's KMS object ID; 0 on nil.
func (fb *Framebuffer) ID() uint32 {
	if fb == nil {
		return 0
	}
	return fb.id
}

// Close removes the framebuffer (RMFB). Idempotent and nil-safe; a no-op
// after the Device is closed (the kernel removed it with the fd).
func (fb *Framebuffer) Close() error {
	if fb == nil || !fb.closed.CompareAndSwap(false, true) {
		return nil
	}
	fb.cleanup.Stop()
	return fb.dev.rmFB(fb.id)
}

// rmFB removes framebuffer id unless the Device is closed.
func (d *Device) rmFB(id uint32) error {
	err := d.locked(func(fd int) error { return uapi.DRMModeRmFBCall(fd, id) })
	if errors.Is(err, ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drm: RmFB %d on %s: %w", id, d, err)
	}
	return nil
}
