package drm_test

import (
	"fmt"
	"log"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// List every DRM device with its role, and for displays whether a plane
// scans out XRGB8888 LINEAR (what `heapctl devices` shows).
func ExampleDiscover() {
	devs, err := drm.Discover(nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, info := range devs {
		role := "render-only"
		if info.Display() {
			role = "display"
		}
		fmt.Printf("%s\t%s\t%s\tiommu=%v\n", info.ID, info.Driver, role, info.IOMMU)
		if !info.Display() {
			continue
		}
		d, err := info.Open(drm.NodePrimary)
		if err != nil {
			fmt.Println("\t", err)
			continue
		}
		planes, err := d.Planes()
		d.Close()
		if err != nil {
			fmt.Println("\t", err)
			continue
		}
		for _, p := range planes {
			fmt.Printf("\tplane %d %v XR24/LINEAR=%v\n", p.ID, p.Type, p.Supports(drm.FormatXRGB8888, drm.ModLinear))
		}
	}
}

// Ask a display whether it can scan out a buffer, in the default layout
// (XRGB8888 LINEAR, sized to the buffer).
func ExampleProbe() {
	var buf *dmabuf.Buffer // from a DMA-BUF heap, udmabuf or another device
	d, err := drm.Open("/dev/dri/card1")
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	res, err := drm.Probe(d, buf, drm.Layout{})
	if err != nil {
		log.Fatal(err) // the probe could not run: wrong node, no KMS, emulated buffer
	}
	if !res.OK {
		fmt.Printf("no: %s failed with %v: %s\n", res.FailedStep, res.Errno, res.Hint)
		return
	}
	fmt.Println("yes:", res)
}

// Allocate scanout memory the way a display driver allocates it for
// itself, and hand it to a render device.
func ExampleAllocateDumb() {
	display, err := drm.Open("/dev/dri/card1")
	if err != nil {
		log.Fatal(err)
	}
	defer display.Close()
	buf, err := drm.AllocateDumb(display, 8<<20)
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()

	render, err := drm.Open("/dev/dri/renderD128")
	if err != nil {
		log.Fatal(err)
	}
	defer render.Close()
	h, err := render.Import(buf)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	fmt.Println("GEM handle on the render device:", h.ID())
}
