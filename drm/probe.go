package drm

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
)

// ProbeStep names the step of the scanout probe that failed.
type ProbeStep string

// Probe steps, in order.
const (
	// StepImport is the PRIME import of the buffer into the display.
	StepImport ProbeStep = "import"
	// StepAddFB2 is the creation of a framebuffer over the imported buffer.
	StepAddFB2 ProbeStep = "addfb2"
	// StepPlane is the check that some plane lists the layout's format with
	// its modifier (IN_FORMATS). ADDFB2 alone does not check that on every
	// kernel: vkms on Linux 6.1 accepts a framebuffer with a tiled modifier
	// none of its planes can read (6.12 refuses it at ADDFB2).
	StepPlane ProbeStep = "plane"
)

// ProbeResult is the answer of the scanout probe. OK is true when the
// display imported the buffer, accepted a framebuffer over it in the given
// layout, and lists the layout's format and modifier on some plane.
// Otherwise FailedStep says which step refused, Errno the kernel's errno
// (0 for StepPlane, which is decided from IN_FORMATS), Err holds the error
// (for errors.Is) and Hint says what it usually means.
//
// Passing the probe means the display can address the memory and accepts
// the layout; whether it really scans it out needs an atomic commit (vkms
// on Linux 6.1, for one, accepts a udmabuf framebuffer it cannot read).
type ProbeResult struct {
	Device     string     `json:"device"` // node path
	Driver     string     `json:"driver"`
	Layout     Layout     `json:"layout"` // with defaults filled in
	OK         bool       `json:"ok"`
	FailedStep ProbeStep  `json:"failed_step,omitempty"`
	Errno      unix.Errno `json:"errno,omitempty"`
	Error      string     `json:"error,omitempty"`
	Hint       string     `json:"hint,omitempty"`
	Err        error      `json:"-"`
}

// String returns a one-line summary: "vkms (/dev/dri/card1): scanout OK
// (512x512 XR24 LINEAR)" or "... import failed: EINVAL (hint)".
func (r ProbeResult) String() string {
	l := fmt.Sprintf("%dx%d %v %v", r.Layout.Width, r.Layout.Height, r.Layout.Format, r.Layout.Modifier)
	if r.OK {
		return fmt.Sprintf("%s (%s): scanout OK (%s)", r.Driver, r.Device, l)
	}
	why := unix.ErrnoName(r.Errno)
	if r.Errno == 0 {
		why = "unsupported"
	}
	s := fmt.Sprintf("%s (%s): %s failed (%s): %s", r.Driver, r.Device, r.FailedStep, l, why)
	if r.Hint != "" {
		s += ": " + r.Hint
	}
	return s
}

// probeHint explains a refusal in the terms a user acts on.
func probeHint(step ProbeStep, errno unix.Errno) string {
	switch {
	case step == StepImport && errno == unix.EINVAL:
		return "the display cannot address this memory; without an IOMMU it needs physically contiguous memory (a CMA heap or a dumb buffer)"
	case step == StepImport && errno == unix.ENOMEM:
		return "the display could not map the buffer (out of memory or address space)"
	case step == StepAddFB2 && errno == unix.EINVAL:
		return "the display rejected the layout (size limits, pitch or offset alignment, format or modifier) or the buffer is too small for it"
	case step == StepAddFB2 && errno == unix.ENOENT:
		return "the imported buffer vanished before the framebuffer was made"
	case step == StepPlane:
		return "no plane of the display lists this format with this modifier"
	}
	return ""
}

// Probe answers "can this display scan out buf in layout l" by importing
// buf into dev (PRIME), creating a framebuffer over it (ADDFB2), checking
// that a plane lists the format with the modifier, removing the framebuffer
// and releasing the import. A zero Layout means DefaultLayout(buf.Size());
// a Layout with zero Width and Height but other fields set is sized the
// same way in its format, after its offset. dev must be an open primary
// node of a KMS device; buf stays owned by the caller.
//
// A refusal by the kernel is a result, not an error: OK false with the
// failing step and errno. The error is for probes that could not run
// (ErrClosed, ErrNeedPrimary, ErrNoKMS, ErrEmulated, ErrNotSupported,
// ErrBadLayout), and for a clean-up that failed (then the result is still
// filled in). The plane check enables UNIVERSAL_PLANES on dev's fd (see
// Device.Planes). Probe never leaves a framebuffer or an extra handle
// reference behind: both are released by defers whatever happens, and a buffer
// already imported on dev by someone else keeps its handle. Safe for
// concurrent use.
func Probe(dev *Device, buf *dmabuf.Buffer, l Layout) (res ProbeResult, err error) {
	if dev == nil {
		return ProbeResult{}, fmt.Errorf("drm: Probe on a nil Device: %w", ErrClosed)
	}
	res = ProbeResult{Device: dev.Path(), Driver: dev.Driver()}
	if buf == nil {
		return res, fmt.Errorf("drm: Probe of a nil buffer on %s: %w", dev, dmabuf.ErrClosed)
	}
	if buf.Emulated() {
		return res, fmt.Errorf("drm: Probe on %s: %w", dev, ErrEmulated)
	}
	if kms, err := dev.HasKMS(); err != nil {
		return res, fmt.Errorf("drm: Probe on %s: %w", dev, err)
	} else if !kms {
		return res, fmt.Errorf("drm: Probe on %s: %w", dev, ErrNoKMS)
	}
	if l.Width == 0 && l.Height == 0 {
		if l, err = completeLayout(l, buf.Size()); err != nil {
			return res, fmt.Errorf("drm: Probe on %s: %w", dev, err)
		}
	}
	if l, err = l.Validate(buf.Size()); err != nil {
		res.Layout = l
		return res, fmt.Errorf("drm: Probe on %s: %w", dev, err)
	}
	res.Layout = l
	if l.Modifier != ModLinear && l.Modifier != ModInvalid && !dev.caps.AddFB2Modifiers {
		return res, fmt.Errorf("drm: Probe with modifier %v on %s, which takes no modifiers: %w", l.Modifier, dev, ErrNotSupported)
	}

	h, ierr := dev.Import(buf)
	if ierr != nil {
		if errno := errnoOf(ierr); errno != 0 {
			return res.fail(StepImport, errno, ierr), nil
		}
		return res, ierr
	}
	defer func() { err = errors.Join(err, h.Close()) }()

	fb, ferr := dev.AddFB2(h, l)
	if ferr != nil {
		if errno := errnoOf(ferr); errno != 0 {
			return res.fail(StepAddFB2, errno, ferr), nil
		}
		return res, ferr
	}
	defer func() { err = errors.Join(err, fb.Close()) }()

	planes, perr := dev.Planes()
	if perr != nil {
		return res, perr
	}
	if !anyPlaneSupports(planes, l.Format, l.Modifier) {
		return res.fail(StepPlane, 0, fmt.Errorf("drm: no plane of %s scans out %v with %v: %w", dev, l.Format, l.Modifier, ErrNotSupported)), nil
	}
	res.OK = true
	return res, nil
}

// anyPlaneSupports reports whether some plane takes format f with modifier
// m; ModInvalid (the implicit layout) only needs the format listed.
func anyPlaneSupports(planes []Plane, f Format, m Modifier) bool {
	for i := range planes {
		p := &planes[i]
		if m == ModInvalid && slices.Contains(p.Formats, f) || p.Supports(f, m) {
			return true
		}
	}
	return false
}

// completeLayout sizes a layout given without width and height to the
// largest square that fits in size bytes after l.Offset, in l.Format
// (default XRGB8888), keeping a given pitch.
func completeLayout(l Layout, size int64) (Layout, error) {
	if l.Format == 0 {
		l.Format = FormatXRGB8888
	}
	cpp, ok := l.Format.BytesPerPixel()
	if !ok {
		return l, fmt.Errorf("%w: give width, height and pitch for format %v", ErrBadLayout, l.Format)
	}
	avail := size - int64(l.Offset)
	l.Width, l.Height = fitSquare(avail, cpp)
	row := l.Width * cpp
	if l.Pitch == 0 {
		l.Pitch = row
	} else if l.Pitch > row && l.Height > 0 && avail >= int64(row) {
		l.Height = uint32(min(uint64(l.Height), uint64(avail-int64(row))/uint64(l.Pitch)+1))
	}
	return l, nil
}

// fail fills in a refusal.
func (r ProbeResult) fail(step ProbeStep, errno unix.Errno, err error) ProbeResult {
	r.OK = false
	r.FailedStep = step
	r.Errno = errno
	r.Err = err
	r.Error = err.Error()
	r.Hint = probeHint(step, errno)
	return r
}
