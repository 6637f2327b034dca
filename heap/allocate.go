package heap

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// More sentinel errors. Test with errors.Is.
var (
	// ErrUnknownDevice means a request named a DRM device that does not
	// exist (or could not be opened).
	ErrUnknownDevice = errors.New("heap: unknown device")
	// ErrNoHeap means no heap gave memory every requested device accepted.
	ErrNoHeap = errors.New("heap: no heap satisfies every device")
)

// Image describes a single-plane image to allocate for.
type Image struct {
	Width  uint32 `json:"width"`
	Height uint32 `json:"height"`
	// Format is a DRM fourcc; 0 means XRGB8888.
	Format drm.Format `json:"format"`
	// Modifier is the memory layout; the zero value is LINEAR.
	Modifier drm.Modifier `json:"modifier"`
}

// Request is a general allocation: by heap name or by device set, by size
// or by image.
type Request struct {
	// Heap is the heap to allocate from. Empty with Devices set means
	// "whichever heap every device accepts", tried in the resolver's order
	// for the first display device. A scanout/<id> heap implies its device.
	Heap string
	// Devices are DRM device ids or driver names the buffer must import
	// into (and, for display devices, be accepted as a framebuffer by).
	Devices []string
	// Size in bytes; ignored when Image is set.
	Size int64
	// Image sizes the buffer and its layout.
	Image *Image
	// Name is the buffer's debug name.
	Name string
	// NonContiguousFallback allows, when Heap is a contiguous heap that
	// cannot fit the request, memory from a non-contiguous heap instead,
	// but only one that every device in Devices (including the device of a
	// scanout heap) accepts in a real probe. Off by default: a display
	// without an IOMMU cannot use such memory.
	NonContiguousFallback bool
}

// Allocation is the result of Allocate. The caller owns Buffer.
type Allocation struct {
	Buffer *dmabuf.Buffer
	// Heap is the name of the heap the memory came from.
	Heap string
	// Layout is the image layout (nil for a plain size request).
	Layout *drm.Layout
	// Attempts lists every candidate tried for the devices, in order.
	Attempts []Attempt
}

// pitchAlign is the row-pitch alignment, in bytes, heapd uses for a LINEAR
// image per driver family. The display probes the result with ADDFB2, so a
// value here that is too small is caught before a client sees the buffer.
// docs/naming.md explains where each value comes from.
var pitchAlign = map[string]uint32{
	"amdgpu": 256, "radeon": 256, "nouveau": 256,
	"i915": 64, "xe": 64,
	"vc4": 64, "v3d": 64,
}

// defaultPitchAlign covers drivers not in the table (vkms, vgem take any
// pitch of at least width × bytes per pixel).
const defaultPitchAlign = 64

// imageLayout computes the layout of img for the given drivers: a pitch
// that satisfies the strictest one, offset 0.
func imageLayout(img Image, drivers []string) (drm.Layout, int64, error) {
	if img.Format == 0 {
		img.Format = drm.FormatXRGB8888
	}
	if img.Width == 0 || img.Height == 0 || img.Width > 16384 || img.Height > 16384 {
		return drm.Layout{}, 0, fmt.Errorf("image %dx%d: sides must be 1..16384 pixels: %w", img.Width, img.Height, ErrInvalidSize)
	}
	cpp, ok := img.Format.BytesPerPixel()
	if !ok {
		return drm.Layout{}, 0, fmt.Errorf("image format %v: bytes per pixel unknown; allocate by size instead: %w", img.Format, ErrInvalidSize)
	}
	align := uint32(defaultPitchAlign)
	for _, d := range drivers {
		if a, ok := pitchAlign[d]; ok && a > align {
			align = a
		}
	}
	pitch := (uint64(img.Width)*uint64(cpp) + uint64(align) - 1) / uint64(align) * uint64(align)
	size := pitch * uint64(img.Height)
	if pitch > math.MaxUint32 || size > 1<<40 {
		return drm.Layout{}, 0, fmt.Errorf("image %dx%d: too large: %w", img.Width, img.Height, ErrInvalidSize)
	}
	l := drm.Layout{Width: img.Width, Height: img.Height, Format: img.Format, Pitch: uint32(pitch), Modifier: img.Modifier}
	return l, int64(size), nil
}

// device finds a device by id, or by driver name when that is unique.
func (r *Registry) deviceLocked(name string) (Device, error) {
	var byDriver []Device
	var known []string
	for _, d := range r.found.Devices {
		info := d.Info()
		if info.ID == name {
			return d, nil
		}
		if info.Driver == name {
			byDriver = append(byDriver, d)
		}
		known = append(known, info.ID+" ("+info.Driver+")")
	}
	if len(byDriver) == 1 {
		return byDriver[0], nil
	}
	sort.Strings(known)
	if len(byDriver) > 1 {
		return nil, fmt.Errorf("device %q: %d devices have this driver; name one by id (%s): %w", name, len(byDriver), strings.Join(known, ", "), ErrUnknownDevice)
	}
	return nil, fmt.Errorf("no DRM device %q (known: %s): %w", name, strings.Join(known, ", "), ErrUnknownDevice)
}

// Allocate serves a general request: a plain heap allocation, an image
// allocation with a computed layout, or memory that every one of a set of
// devices accepts (each display device probes it with ADDFB2 in the
// layout, each render device imports it). The Allocation's Buffer is owned
// by the caller. On ErrNoHeap the error names which device refused which
// heap at which step. Safe for concurrent use.
func (r *Registry) Allocate(ctx context.Context, req Request) (*Allocation, error) {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return nil, ErrClosed
	}
	var devs []Device
	names := req.Devices
	var fixed Heap
	if req.Heap != "" {
		h, ok := r.heaps[req.Heap]
		if !ok {
			r.mu.RUnlock()
			_, err := r.Get(req.Heap)
			return nil, err
		}
		fixed = h
		if dev := h.Info().Device; dev != "" && !contains(names, dev) {
			names = append([]string{dev}, names...)
		}
	}
	for _, n := range names {
		d, err := r.deviceLocked(n)
		if err != nil {
			r.mu.RUnlock()
			return nil, err
		}
		devs = append(devs, d)
	}
	found, cache := r.found, r.cache
	r.mu.RUnlock()

	var drivers []string
	for _, d := range devs {
		drivers = append(drivers, d.Info().Driver)
	}
	size := req.Size
	var layout *drm.Layout
	if req.Image != nil {
		l, s, err := imageLayout(*req.Image, drivers)
		if err != nil {
			return nil, err
		}
		layout, size = &l, s
	}
	var cands []candidate
	switch {
	case fixed != nil:
		cands = []candidate{{req.Heap, fixed}}
	case len(devs) == 0:
		return nil, fmt.Errorf("allocation needs a heap name or at least one device: %w", ErrUnknownHeap)
	default:
		cands = deviceCandidates(&found, devs)
	}
	out := &Allocation{Layout: layout}
candidates:
	for i := 0; i < len(cands); i++ {
		c := cands[i]
		// A display that refused this heap at the resolver's probe (at
		// import: the memory, not the layout) refuses it again: skip the
		// allocation.
		for _, d := range devs {
			r.mu.RLock()
			a, ok := cache[probeKey{d.Info().ID, c.name}]
			r.mu.RUnlock()
			if ok && !a.OK && a.Step == string(drm.StepImport) {
				a.Cached = true
				out.Attempts = append(out.Attempts, a)
				continue candidates
			}
		}
		buf, err := c.heap.Alloc(ctx, size, AllocOptions{Name: req.Name})
		if err != nil {
			if fixed != nil && req.NonContiguousFallback && len(devs) > 0 && c.heap.Info().Contiguous && IsNoMemory(err) {
				// Opt-in: CMA cannot fit it; try non-contiguous heaps,
				// each of which must pass every device's probe below.
				out.Attempts = append(out.Attempts, Attempt{Heap: c.name, Backend: c.heap.Info().Backend, Step: "alloc", Error: err.Error()})
				for _, fc := range deviceCandidates(&found, devs) {
					if !fc.heap.Info().Contiguous && fc.heap.Info().Backend != BackendDumb {
						cands = append(cands, fc)
					}
				}
				fixed = nil
				continue
			}
			if fixed != nil || ctx.Err() != nil {
				return nil, err
			}
			out.Attempts = append(out.Attempts, Attempt{Heap: c.name, Backend: c.heap.Info().Backend, Step: "alloc", Error: err.Error()})
			continue
		}
		ok := true
		for _, d := range devs {
			a := check(d, buf, c, layout)
			out.Attempts = append(out.Attempts, a)
			if !a.OK {
				ok = false
				break
			}
		}
		if ok {
			out.Buffer, out.Heap = buf, c.name
			return out, nil
		}
		buf.Close()
	}
	var why []string
	for _, a := range out.Attempts {
		if !a.OK {
			why = append(why, a.String())
		}
	}
	return out, fmt.Errorf("%w: %s", ErrNoHeap, strings.Join(why, "; "))
}

// deviceCandidates orders the heaps to try for a device set: the first
// display device's resolver order, or for render-only sets system,
// udmabuf, then the CMA heaps.
func deviceCandidates(f *Found, devs []Device) []candidate {
	for _, d := range devs {
		if info := d.Info(); info.Display() {
			c, _ := candidates(f, d)
			return c
		}
	}
	c, _ := candidates(f, renderOnly{devs[0]})
	return c
}

// renderOnly presents a device to candidates as one behind an IOMMU with
// no display: system memory first, no dumb buffers.
type renderOnly struct{ Device }

func (r renderOnly) Info() drm.DeviceInfo {
	i := r.Device.Info()
	i.IOMMU, i.KMS = true, false
	return i
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Resolutions returns how every display device's scanout heap was chosen,
// by device id.
func (r *Registry) Resolutions() []Resolution {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]Resolution(nil), r.resolutions...)
}

// Resolution returns how the scanout heap of one display device (id or
// unique driver name) was chosen.
func (r *Registry) Resolution(device string) (Resolution, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id := device
	if d, err := r.deviceLocked(device); err == nil {
		id = d.Info().ID
	}
	for _, res := range r.resolutions {
		if res.Device == id {
			return res, nil
		}
	}
	var ids []string
	for _, res := range r.resolutions {
		ids = append(ids, res.Device)
	}
	return Resolution{}, fmt.Errorf("no display device %q (displays: %s): %w", device, strings.Join(ids, ", "), ErrUnknownDevice)
}
