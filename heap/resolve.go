package heap

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// probeSide is the side of the square XRGB8888 LINEAR framebuffer the
// resolver probes with: above every display's minimum (vkms: 20 px on 6.1)
// and small enough (16 KiB) to cost nothing.
const probeSide = 64

// probeLayout is the layout every resolver probe uses.
var probeLayout = drm.Layout{Width: probeSide, Height: probeSide, Format: drm.FormatXRGB8888, Pitch: probeSide * 4, Modifier: drm.ModLinear}

// Attempt is one candidate heap tried for a device.
type Attempt struct {
	// Heap is the candidate's name ("kernel/reserved", "udmabuf",
	// "dumb/<device>").
	Heap    string  `json:"heap"`
	Backend Backend `json:"backend"`
	// Device is the id of the device that was asked.
	Device string `json:"device"`
	OK     bool   `json:"ok"`
	// Step is where it failed: "alloc", or a drm.ProbeStep ("import",
	// "addfb2", "plane").
	Step  string `json:"failed_step,omitempty"`
	Errno string `json:"errno,omitempty"`
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`
	// Cached reports that the answer came from the probe cache.
	Cached bool `json:"cached,omitempty"`
}

func (a Attempt) String() string {
	if a.OK {
		return fmt.Sprintf("%s: %s accepted it", a.Heap, a.Device)
	}
	s := fmt.Sprintf("%s: %s refused it at %s", a.Heap, a.Device, a.Step)
	if a.Errno != "" {
		s += " (" + a.Errno + ")"
	}
	if a.Hint != "" {
		s += ": " + a.Hint
	} else if a.Error != "" {
		s += ": " + a.Error
	}
	return s
}

// Resolution explains how a display device's scanout heap was chosen.
type Resolution struct {
	Device string `json:"device"`
	Driver string `json:"driver"`
	IOMMU  bool   `json:"iommu"`
	// Order says why the candidates were tried in this order.
	Order string `json:"order"`
	// Heap is the chosen candidate, "" when none passed.
	Heap     string    `json:"heap,omitempty"`
	Attempts []Attempt `json:"attempts"`
	// Error says why the device could not be resolved at all (not
	// openable, no display).
	Error string `json:"error,omitempty"`
}

// candidate is one heap the resolver may try for a device.
type candidate struct {
	name string
	heap Heap
}

// candidates lists, in the documented order, the heaps to try for display
// device dev:
//
//  1. a kernel heap linked to the device: one named after its driver or its
//     id (the RFC's /dev/dma_heap/vc4);
//  2. without an IOMMU: the contiguous (CMA) heap, then any other CMA heap;
//  3. the kernel system heap;
//  4. udmabuf;
//  5. with an IOMMU: the CMA heaps, now only as a fallback;
//  6. dumb buffers on the device itself, last.
//
// The emulated heap is never a candidate: no device can import it.
func candidates(f *Found, dev Device) ([]candidate, string) {
	info := dev.Info()
	var out []candidate
	seen := map[Heap]bool{}
	add := func(name string, h Heap) {
		if h != nil && !seen[h] {
			seen[h] = true
			out = append(out, candidate{name, h})
		}
	}
	for _, n := range []string{info.Driver, info.ID} {
		if n != "" && n != f.SystemKernelName && n != f.CMAKernelName {
			add("kernel/"+n, f.Kernel[n])
		}
	}
	var cma []string
	if f.CMAKernelName != "" {
		cma = append(cma, f.CMAKernelName)
	}
	var others []string
	for n, h := range f.Kernel {
		if n != f.CMAKernelName && h.Info().Contiguous {
			others = append(others, n)
		}
	}
	sort.Strings(others)
	cma = append(cma, others...)
	addCMA := func() {
		for _, n := range cma {
			add("kernel/"+n, f.Kernel[n])
		}
	}
	order := "linked heap, system, udmabuf, contiguous, dumb (behind an IOMMU any memory works, so scarce CMA comes last)"
	if !info.IOMMU {
		addCMA()
		order = "linked heap, contiguous, system, udmabuf, dumb (no IOMMU: the display needs physically contiguous memory)"
	}
	if f.SystemKernelName != "" {
		add("kernel/"+f.SystemKernelName, f.Kernel[f.SystemKernelName])
	}
	if f.Udmabuf != nil {
		add("udmabuf", f.Udmabuf)
	}
	if info.IOMMU {
		addCMA()
	}
	if info.Display() {
		add("dumb/"+info.ID, dumbHeap{dev: dev})
	}
	return out, order
}

// probeKey identifies a cached probe answer.
type probeKey struct{ device, heap string }

// probe tries one candidate on one display device with the probe layout.
func probe(ctx context.Context, dev Device, c candidate, l *drm.Layout, size int64) Attempt {
	info := dev.Info()
	a := Attempt{Heap: c.name, Backend: c.heap.Info().Backend, Device: info.ID}
	buf, err := c.heap.Alloc(ctx, size, AllocOptions{Name: "heapd-probe"})
	if err != nil {
		a.Step, a.Error = "alloc", err.Error()
		if e := errnoOf(err); e != 0 {
			a.Errno = e.Error()
		}
		return a
	}
	defer buf.Close()
	return check(dev, buf, c, l)
}

// check asks dev about buf: a display probes (import + ADDFB2 in layout l,
// or the default layout for the buffer's size when l is nil), a render-only
// device imports.
func check(dev Device, buf *dmabuf.Buffer, c candidate, l *drm.Layout) Attempt {
	info := dev.Info()
	a := Attempt{Heap: c.name, Backend: c.heap.Info().Backend, Device: info.ID}
	if !info.Display() {
		if err := dev.CheckImport(buf); err != nil {
			a.Step, a.Error = string(drm.StepImport), err.Error()
			if e := errnoOf(err); e != 0 {
				a.Errno = e.Error()
			}
			return a
		}
		a.OK = true
		return a
	}
	// Without an image layout the display probes the buffer as the largest
	// XRGB8888 LINEAR square that fits it (drm.DefaultLayout).
	var layout drm.Layout
	if l != nil {
		layout = *l
	}
	res, err := dev.Probe(buf, layout)
	switch {
	case err != nil:
		a.Step, a.Error = "probe", err.Error()
	case !res.OK:
		a.Step, a.Error, a.Hint = string(res.FailedStep), res.Error, res.Hint
		if res.Errno != 0 {
			a.Errno = res.Errno.Error()
		}
	default:
		a.OK = true
	}
	return a
}

// resolve binds one display device to the first candidate that passes.
func (r *Registry) resolve(ctx context.Context, f *Found, dev Device, cache map[probeKey]Attempt) Resolution {
	info := dev.Info()
	res := Resolution{Device: info.ID, Driver: info.Driver, IOMMU: info.IOMMU}
	cands, order := candidates(f, dev)
	res.Order = order
	for _, c := range cands {
		key := probeKey{info.ID, c.name}
		a, ok := cache[key]
		if ok {
			a.Cached = true
		} else {
			a = probe(ctx, dev, c, &probeLayout, int64(probeLayout.Pitch)*int64(probeLayout.Height))
			cache[key] = a
		}
		res.Attempts = append(res.Attempts, a)
		if a.OK {
			res.Heap = c.name
			return res
		}
	}
	return res
}

// String explains a resolution in a few lines.
func (res Resolution) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scanout/%s (%s", res.Device, res.Driver)
	if res.IOMMU {
		b.WriteString(", behind an IOMMU")
	} else {
		b.WriteString(", no IOMMU")
	}
	b.WriteString(")\n")
	if res.Error != "" {
		fmt.Fprintf(&b, "  cannot resolve: %s\n", res.Error)
		return b.String()
	}
	fmt.Fprintf(&b, "  order: %s\n", res.Order)
	for _, a := range res.Attempts {
		mark := "FAIL"
		if a.OK {
			mark = "ok  "
		}
		fmt.Fprintf(&b, "  %s %s\n", mark, a)
	}
	if res.Heap != "" {
		fmt.Fprintf(&b, "  chosen: %s", res.Heap)
	} else {
		b.WriteString("  chosen: none: no heap passed the probe")
	}
	return b.String()
}
