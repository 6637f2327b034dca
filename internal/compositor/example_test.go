package compositor_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/compositor"
)

// Show a pattern on vkms, capture it through the writeback connector,
// compare, save a PNG, then flip a 3-buffer swapchain.
func Example() {
	dev, err := compositor.OpenDisplay("vkms") // DRM master until Close
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	heap, err := dmaheap.Open("reserved")
	if err != nil {
		log.Fatal(err)
	}
	defer heap.Close()
	l := drm.Layout{Width: 1024, Height: 768} // XRGB8888 LINEAR, tight pitch
	bufs := make([]*dmabuf.Buffer, 5)         // shown, capture, 3 to flip
	for i := range bufs {
		if bufs[i], err = heap.Alloc(1024 * 768 * 4); err != nil {
			log.Fatal(err)
		}
		defer bufs[i].Close()
		if err := compositor.FillPattern(bufs[i], l, uint32(i)<<16); err != nil {
			log.Fatal(err)
		}
	}
	scr, err := compositor.Show(dev, bufs[0], l)
	if err != nil {
		log.Fatal(err)
	}
	defer scr.Close() // before dev.Close: restores the display, releases

	if _, err := scr.Capture(context.Background(), bufs[1], l); err != nil {
		log.Fatal(err)
	}
	r, err := compositor.CompareBuffers(bufs[0], l, bufs[1], l)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r) // 786432 pixels: exact match
	f, err := os.Create("capture.png")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if err := compositor.WritePNG(f, bufs[1], l); err != nil {
		log.Fatal(err)
	}

	st, err := scr.Flip(context.Background(), bufs[2:], l, 120)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st) // 120 flips in 2.002s: 60.0 flips/s (kernel 60.0) at 60.00 Hz, 0 missed
}
