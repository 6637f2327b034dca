package compositor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNoDisplay means no device, connector, CRTC or plane fits.
	ErrNoDisplay = errors.New("compositor: no display path")
	// ErrNoMode means no connected connector has a mode of the layout's
	// size (the primary plane must cover the whole CRTC, and heapd does not
	// scale).
	ErrNoMode = errors.New("compositor: no mode of the layout's size")
	// ErrNoWriteback means the display has no writeback connector (vkms
	// loaded without enable_writeback=1, or a kernel before 4.19).
	ErrNoWriteback = errors.New("compositor: display has no writeback connector")
	// ErrClosed means the Screen was closed.
	ErrClosed = errors.New("compositor: screen closed")
)

// OpenDisplay opens the primary node of the DRM device whose driver is
// driver ("vkms") as DRM master and enables the atomic client capability
// and, where the kernel has it, writeback connectors. The caller owns the
// returned Device and must Close it (which drops master). Errors wrap
// ErrNoDisplay when no such device exists, EBUSY when another process is
// master.
func OpenDisplay(driver string) (*drm.Device, error) {
	devs, err := drm.Discover(nil)
	if err != nil {
		return nil, fmt.Errorf("compositor: %w", err)
	}
	var seen []string
	for _, info := range devs {
		seen = append(seen, info.Driver)
		if info.Driver != driver || info.Primary == nil || !info.KMS {
			continue
		}
		d, err := drm.OpenMaster(info.Primary.Path)
		if err != nil {
			return nil, fmt.Errorf("compositor: %w", err)
		}
		if err := d.EnableAtomic(); err != nil {
			d.Close()
			return nil, fmt.Errorf("compositor: %w", err)
		}
		_ = d.EnableWriteback() // optional: Capture reports ErrNoWriteback
		return d, nil
	}
	return nil, fmt.Errorf("%w: no %s device with mode setting (found %v)", ErrNoDisplay, driver, seen)
}

// Screen is a buffer shown on a display by Show: the chosen connector,
// CRTC, primary plane and mode, and what Show must undo. Its methods are
// safe for concurrent use and run one at a time. Close restores the
// display and releases the framebuffer, import and mode blob; it is
// idempotent and nil-safe. A Screen does not own its Device.
type Screen struct {
	mu     sync.Mutex
	dev    *drm.Device
	closed bool

	connector drm.ConnectorInfo
	writeback drm.ConnectorInfo // ID 0: none
	crtc      uint32
	plane     uint32
	mode      drm.Mode
	layout    drm.Layout

	connP, wbP, crtcP, planeP *drm.Properties

	blob    *drm.PropertyBlob
	handle  *drm.Handle
	fb      *drm.Framebuffer
	restore drm.AtomicRequest // the state Show found
	flips   uint64            // flip commits so far: their events' user data
}

// Show puts buf on a display of dev: it imports buf, creates a
// framebuffer of layout l (completed by l.Validate; offset 0 on vkms,
// which applies an offset twice), and commits a modeset that drives the
// first connected connector having a mode of exactly l's size (its
// preferred mode if that fits) from a CRTC whose primary plane scans out
// l's format and modifier, covering the whole CRTC. dev must be DRM master
// with atomic enabled (OpenDisplay). Neither dev nor buf is taken over:
// buf may be closed after Show (the framebuffer keeps the memory), dev
// must outlive the Screen. The caller must Close the Screen.
//
// Errors wrap ErrNoMode, ErrNoDisplay, drm.ErrBadLayout, drm.ErrNotMaster
// or the kernel's refusal; on error nothing is left behind.
func Show(dev *drm.Device, buf *dmabuf.Buffer, l drm.Layout) (_ *Screen, err error) {
	if dev == nil || buf == nil {
		return nil, fmt.Errorf("compositor: Show: nil device or buffer: %w", drm.ErrClosed)
	}
	if l, err = l.Validate(buf.Size()); err != nil {
		return nil, fmt.Errorf("compositor: Show: %w", err)
	}
	s := &Screen{dev: dev, layout: l}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	if err := dev.EnableAtomic(); err != nil {
		return nil, fmt.Errorf("compositor: Show: %w", err)
	}
	_ = dev.EnableWriteback() // optional
	if err := s.choosePath(); err != nil {
		return nil, err
	}
	if err := s.readProperties(); err != nil {
		return nil, err
	}
	if s.handle, err = dev.Import(buf); err != nil {
		return nil, fmt.Errorf("compositor: Show: %w", err)
	}
	if s.fb, err = dev.AddFB2(s.handle, l); err != nil {
		return nil, fmt.Errorf("compositor: Show: %w", err)
	}
	if s.blob, err = dev.CreateModeBlob(s.mode); err != nil {
		return nil, fmt.Errorf("compositor: Show: %w", err)
	}
	var r drm.AtomicRequest
	s.detachOthers(&r)
	r.SetProperty(s.connP, "CRTC_ID", uint64(s.crtc))
	if s.wbP != nil {
		r.SetProperty(s.wbP, "CRTC_ID", 0)
	}
	r.SetProperty(s.crtcP, "MODE_ID", uint64(s.blob.ID()))
	r.SetProperty(s.crtcP, "ACTIVE", 1)
	s.setPlane(&r, s.fb)
	if _, err := dev.AtomicCommit(&r, drm.AtomicAllowModeset); err != nil {
		return nil, fmt.Errorf("compositor: Show %dx%d on %s (%s): %w", l.Width, l.Height, s.connector.Name, s.mode, err)
	}
	return s, nil
}

// choosePath picks connector, mode, CRTC and primary plane.
func (s *Screen) choosePath() error {
	conns, err := s.dev.Connectors()
	if err != nil {
		return fmt.Errorf("compositor: Show: %w", err)
	}
	res, err := s.dev.Resources()
	if err != nil {
		return fmt.Errorf("compositor: Show: %w", err)
	}
	planes, err := s.dev.Planes()
	if err != nil {
		return fmt.Errorf("compositor: Show: %w", err)
	}
	for _, c := range conns {
		if c.Type == drm.ConnectorWriteback && s.writeback.ID == 0 {
			s.writeback = c
		}
	}
	var tried []string
	for _, c := range conns {
		if c.Type == drm.ConnectorWriteback || c.Status != drm.Connected {
			continue
		}
		mode, ok := c.FindMode(s.layout.Width, s.layout.Height)
		if !ok {
			tried = append(tried, fmt.Sprintf("%s has %s", c.Name, modeSizes(c.Modes)))
			continue
		}
		crtcs, err := s.possibleCRTCs(c)
		if err != nil {
			return err
		}
		for i, crtc := range res.CRTCs {
			if crtcs&(1<<i) == 0 {
				continue
			}
			for _, p := range planes {
				if p.Type == drm.PlanePrimary && p.PossibleCRTCs&(1<<i) != 0 && p.Supports(s.layout.Format, s.layout.Modifier) {
					s.connector, s.mode, s.crtc, s.plane = c, mode, crtc, p.ID
					return nil
				}
			}
			tried = append(tried, fmt.Sprintf("%s: no primary plane of CRTC %d takes %v %v", c.Name, crtc, s.layout.Format, s.layout.Modifier))
		}
	}
	if len(tried) == 0 {
		return fmt.Errorf("%w: %s has no connected connector", ErrNoDisplay, s.dev)
	}
	return fmt.Errorf("%w: %dx%d on %s: %s", ErrNoMode, s.layout.Width, s.layout.Height, s.dev, strings.Join(tried, "; "))
}

// possibleCRTCs returns the CRTC bitmask of c's encoders.
func (s *Screen) possibleCRTCs(c drm.ConnectorInfo) (uint32, error) {
	var mask uint32
	for _, id := range c.Encoders {
		e, err := s.dev.Encoder(id)
		if err != nil {
			return 0, fmt.Errorf("compositor: Show: %w", err)
		}
		mask |= e.PossibleCRTCs
	}
	return mask, nil
}

// modeSizes lists the distinct sizes of modes, for error messages.
func modeSizes(modes []drm.Mode) string {
	var out []string
	for _, m := range modes {
		sz := fmt.Sprintf("%dx%d", m.HDisplay, m.VDisplay)
		if !slices.Contains(out, sz) {
			out = append(out, sz)
		}
	}
	if len(out) == 0 {
		return "no modes"
	}
	if len(out) > 8 {
		out = append(out[:8], "...")
	}
	return strings.Join(out, " ")
}

// planeProps are the plane properties Show sets and Close restores.
var planeProps = []string{"FB_ID", "CRTC_ID", "SRC_X", "SRC_Y", "SRC_W", "SRC_H", "CRTC_X", "CRTC_Y", "CRTC_W", "CRTC_H"}

// readProperties reads the objects' properties and records their current
// values as the state to restore.
func (s *Screen) readProperties() error {
	get := func(id uint32, typ drm.ObjectType) (*drm.Properties, error) {
		p, err := s.dev.Properties(id, typ)
		if err != nil {
			return nil, fmt.Errorf("compositor: Show: %w", err)
		}
		return p, nil
	}
	var err error
	if s.connP, err = get(s.connector.ID, drm.ObjectConnector); err != nil {
		return err
	}
	if s.crtcP, err = get(s.crtc, drm.ObjectCRTC); err != nil {
		return err
	}
	if s.planeP, err = get(s.plane, drm.ObjectPlane); err != nil {
		return err
	}
	if s.writeback.ID != 0 {
		if s.wbP, err = get(s.writeback.ID, drm.ObjectConnector); err != nil {
			return err
		}
	}
	keep := func(p *drm.Properties, names ...string) {
		for _, n := range names {
			if v, ok := p.Value(n); ok {
				s.restore.SetProperty(p, n, v)
			}
		}
	}
	if err := s.forOthersOnCRTC(func(p *drm.Properties) { keep(p, "CRTC_ID") }); err != nil {
		return err
	}
	keep(s.connP, "CRTC_ID")
	if s.wbP != nil {
		keep(s.wbP, "CRTC_ID")
	}
	keep(s.crtcP, "MODE_ID", "ACTIVE")
	keep(s.planeP, planeProps...)
	if err := s.restore.Err(); err != nil {
		return fmt.Errorf("compositor: Show: %w", err)
	}
	return nil
}

// forOthersOnCRTC calls f with the properties of every other (non-chosen,
// non-writeback) connector currently on the chosen CRTC.
func (s *Screen) forOthersOnCRTC(f func(p *drm.Properties)) error {
	conns, err := s.dev.Connectors()
	if err != nil {
		return fmt.Errorf("compositor: Show: %w", err)
	}
	for _, c := range conns {
		if c.ID == s.connector.ID || c.ID == s.writeback.ID {
			continue
		}
		p, err := s.dev.Properties(c.ID, drm.ObjectConnector)
		if err != nil {
			return fmt.Errorf("compositor: Show: %w", err)
		}
		if v, _ := p.Value("CRTC_ID"); v == uint64(s.crtc) {
			f(p)
		}
	}
	return nil
}

// detachOthers takes other connectors off the chosen CRTC.
func (s *Screen) detachOthers(r *drm.AtomicRequest) {
	_ = s.forOthersOnCRTC(func(p *drm.Properties) { r.SetProperty(p, "CRTC_ID", 0) })
}

// setPlane puts fb on the primary plane, covering the whole CRTC.
func (s *Screen) setPlane(r *drm.AtomicRequest, fb *drm.Framebuffer) {
	w, h := s.mode.Size()
	for _, v := range []struct {
		name  string
		value uint64
	}{
		{"FB_ID", uint64(fb.ID())}, {"CRTC_ID", uint64(s.crtc)},
		{"SRC_X", 0}, {"SRC_Y", 0}, {"SRC_W", uint64(w) << 16}, {"SRC_H", uint64(h) << 16},
		{"CRTC_X", 0}, {"CRTC_Y", 0}, {"CRTC_W", uint64(w)}, {"CRTC_H", uint64(h)},
	} {
		r.SetProperty(s.planeP, v.name, v.value)
	}
}

// Mode returns the mode Show set. Safe on nil (zero).
func (s *Screen) Mode() drm.Mode {
	if s == nil {
		return drm.Mode{}
	}
	return s.mode
}

// Connector returns the connector Show drives ("Virtual-1" on vkms).
func (s *Screen) Connector() drm.ConnectorInfo {
	if s == nil {
		return drm.ConnectorInfo{}
	}
	return s.connector
}

// Layout returns the shown buffer's completed layout.
func (s *Screen) Layout() drm.Layout {
	if s == nil {
		return drm.Layout{}
	}
	return s.layout
}

// Framebuffer returns the shown framebuffer's ID (owned by the Screen).
func (s *Screen) Framebuffer() uint32 {
	if s == nil {
		return 0
	}
	return s.fb.ID()
}

// String returns "1024x768@60.00 on Virtual-1 (CRTC 35, plane 31)".
func (s *Screen) String() string {
	if s == nil {
		return "<nil compositor.Screen>"
	}
	return fmt.Sprintf("%s on %s (CRTC %d, plane %d)", s.mode, s.connector.Name, s.crtc, s.plane)
}

// lock takes s.mu; ErrClosed once closed.
func (s *Screen) lock() error {
	if s == nil {
		return ErrClosed
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// CaptureStats describe one writeback capture.
type CaptureStats struct {
	// FenceLatency is the time from the writeback commit to the out
	// fence signalling (50-70 ms on vkms under TCG at 640x480).
	FenceLatency time.Duration
	// Writeback is the writeback connector's name ("Writeback-1").
	Writeback string
}

// Capture writes the frame the Screen shows into the buffer into (layout
// l, which must have exactly the mode's size): it imports into, creates a
// framebuffer, moves the CRTC from the display connector to the writeback
// connector with WRITEBACK_FB_ID and WRITEBACK_OUT_FENCE_PTR in one commit,
// waits for the out fence, and moves the CRTC back. Read the pixels with
// ReadPixels (CPU access is bracketed there). into is not taken over.
//
// A ctx done before the commit stops Capture at once. Once committed, a
// writeback cannot be called off: when ctx ends first, Capture still waits
// up to 5 seconds for the fence before it moves the CRTC back (drivers
// like vkms get stuck otherwise, and the kernel must not write into into
// after Capture returns), then returns ctx's error.
//
// Errors wrap ErrNoWriteback, drm.ErrBadLayout, ErrClosed, ctx's error, or
// the kernel's refusal (EINVAL for a format the writeback connector cannot
// write or a size other than the mode's). On every path the CRTC is moved
// back (when it was moved) and the capture's framebuffer and import are
// released.
func (s *Screen) Capture(ctx context.Context, into *dmabuf.Buffer, l drm.Layout) (st CaptureStats, err error) {
	if err := s.lock(); err != nil {
		return st, err
	}
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("compositor: Capture: %w", err)
	}
	if s.wbP == nil {
		return st, fmt.Errorf("compositor: Capture on %s: %w", s.dev, ErrNoWriteback)
	}
	st.Writeback = s.writeback.Name
	if into == nil {
		return st, fmt.Errorf("compositor: Capture into a nil buffer: %w", drm.ErrClosed)
	}
	if l, err = l.Validate(into.Size()); err != nil {
		return st, fmt.Errorf("compositor: Capture: %w", err)
	}
	if w, h := s.mode.Size(); l.Width != w || l.Height != h {
		return st, fmt.Errorf("compositor: Capture: %w: %dx%d, the writeback framebuffer must have the mode's size %dx%d", drm.ErrBadLayout, l.Width, l.Height, w, h)
	}
	h, err := s.dev.Import(into)
	if err != nil {
		return st, fmt.Errorf("compositor: Capture: %w", err)
	}
	defer closeInto(&err, h)
	fb, err := s.dev.AddFB2(h, l)
	if err != nil {
		return st, fmt.Errorf("compositor: Capture: %w", err)
	}
	defer closeInto(&err, fb)

	var r drm.AtomicRequest
	r.SetProperty(s.connP, "CRTC_ID", 0)
	r.SetProperty(s.wbP, "CRTC_ID", uint64(s.crtc))
	r.SetWriteback(s.wbP, fb)
	start := time.Now()
	fences, err := s.dev.AtomicCommit(&r, drm.AtomicAllowModeset)
	if err != nil {
		return st, fmt.Errorf("compositor: Capture via %s: %w", s.writeback.Name, err)
	}
	defer func() {
		// Back to the display, whatever happened to the fence.
		var back drm.AtomicRequest
		back.SetProperty(s.wbP, "CRTC_ID", 0)
		back.SetProperty(s.connP, "CRTC_ID", uint64(s.crtc))
		if _, berr := s.dev.AtomicCommit(&back, drm.AtomicAllowModeset); berr != nil && err == nil {
			err = fmt.Errorf("compositor: Capture: moving the CRTC back to %s: %w", s.connector.Name, berr)
		}
	}()
	if len(fences) != 1 || fences[0] == nil {
		for _, f := range fences {
			f.Close()
		}
		return st, fmt.Errorf("compositor: Capture via %s: the kernel returned no out fence", s.writeback.Name)
	}
	defer closeInto(&err, fences[0])
	if werr := fences[0].Wait(ctx); werr != nil {
		// A committed writeback cannot be called off. Moving the CRTC
		// away before the job completes leaves vkms's job queue and
		// composer stuck (seen on 6.1: every later flip waits for a
		// composition, every later capture times out), and the kernel
		// would write into the buffer after Capture returned. So wait
		// a while longer, whatever ctx says.
		gctx, cancel := context.WithTimeout(context.Background(), captureGrace)
		gerr := fences[0].Wait(gctx)
		cancel()
		if gerr != nil {
			return st, fmt.Errorf("compositor: Capture via %s: %w; the writeback did not complete within a further %v either (%w): the display may be stuck", s.writeback.Name, werr, captureGrace, gerr)
		}
		return st, fmt.Errorf("compositor: Capture via %s: %w (the writeback completed before Capture returned)", s.writeback.Name, werr)
	}
	st.FenceLatency = time.Since(start)
	return st, nil
}

// captureGrace is how long Capture keeps waiting for a committed
// writeback after its context is done: far longer than a frame, even
// under emulation.
const captureGrace = 5 * time.Second

// closeInto closes c and records its error in *err unless one is there.
func closeInto(err *error, c interface{ Close() error }) {
	if cerr := c.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// Close restores the display state Show found (or, if the kernel refuses
// that, switches the connector, CRTC and plane off), then removes the
// framebuffer, closes the import and destroys the mode blob. The Device
// is not closed. Idempotent and nil-safe; later calls of other methods
// return ErrClosed.
func (s *Screen) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if _, err := s.dev.AtomicCommit(&s.restore, drm.AtomicAllowModeset); err != nil {
		if _, err2 := s.dev.AtomicCommit(s.offRequest(), drm.AtomicAllowModeset); err2 != nil {
			errs = append(errs, fmt.Errorf("compositor: restoring the display: %w; switching it off: %w", err, err2))
		}
	}
	errs = append(errs, s.release())
	return errors.Join(errs...)
}

// offRequest switches the chosen pipeline off.
func (s *Screen) offRequest() *drm.AtomicRequest {
	var r drm.AtomicRequest
	r.SetProperty(s.connP, "CRTC_ID", 0)
	if s.wbP != nil {
		r.SetProperty(s.wbP, "CRTC_ID", 0)
	}
	r.SetProperty(s.crtcP, "ACTIVE", 0)
	r.SetProperty(s.crtcP, "MODE_ID", 0)
	r.SetProperty(s.planeP, "FB_ID", 0)
	r.SetProperty(s.planeP, "CRTC_ID", 0)
	return &r
}

// release frees what Show created, in reverse order.
func (s *Screen) release() error {
	var errs []error
	for _, c := range []interface{ Close() error }{s.fb, s.handle, s.blob} {
		errs = append(errs, c.Close()) // nil-safe
	}
	return errors.Join(errs...)
}
