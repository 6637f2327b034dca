// Command scanout is the RFC's flow in one small program: get memory a
// display can scan out from heapd, without opening the display's node;
// import it into a render device; render into it; and, with --show, put it
// on the display and check what the display shows.
//
// As an ordinary user (heapd running, a policy rule granting "scanout"):
//
//	go run ./examples/scanout --display vkms --render vgem
//
// allocates a 1024×768 XRGB8888 LINEAR image for {vkms, vgem}, imports it
// into vgem's render node and writes a test pattern bracketed by DMA-BUF
// CPU sync (vgem cannot map imported objects through its render node, so
// the pattern goes through the DMA-BUF's own mmap; a GPU driver would
// render instead). It never opens vkms.
//
// As root, --show additionally becomes DRM master on the display, shows
// the buffer with the layout heapd returned, captures it through the
// writeback connector and compares the pixels:
//
//	sudo go run ./examples/scanout --show
//
// `heapctl demo scanout` runs the same flow with the renderer and the
// compositor in two processes of different uids, passing the fd between
// them; see docs/rfc.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/compositor"
	"github.com/heapd/heapd/protocol"
)

func main() {
	display := flag.String("display", "vkms", "display device (id or driver name)")
	render := flag.String("render", "vgem", "render device (id or driver name)")
	renderNode := flag.String("render-node", "", "render node path (default: discovered from --render)")
	width := flag.Uint("width", 1024, "image width")
	height := flag.Uint("height", 768, "image height")
	show := flag.Bool("show", false, "as root: show the buffer on the display, capture and compare")
	flag.Parse()
	if err := run(*display, *render, *renderNode, uint32(*width), uint32(*height), *show); err != nil {
		log.Fatal(err)
	}
}

func run(display, render, renderNode string, width, height uint32, show bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 1. Memory for both devices, by image description. heapd picks the
	// heap and the layout; this process needs no device node for it.
	c := &client.Client{} // $HEAPD_SOCKET or the default socket
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{
		Devices: []string{display, render},
		Image:   &protocol.Image{Width: width, Height: height, Format: uint32(drm.FormatXRGB8888), Modifier: uint64(drm.ModLinear)},
		Label:   "example-scanout",
	})
	if err != nil {
		return err
	}
	defer a.Close()
	buf := a.Buffers[0]
	l := drm.Layout{Width: a.Layout.Width, Height: a.Layout.Height, Format: drm.Format(a.Layout.Format),
		Pitch: a.Layout.Pitch, Offset: a.Layout.Offset, Modifier: drm.Modifier(a.Layout.Modifier)}
	fmt.Printf("heap %s (%s): %dx%d pitch %d\n", a.Heap, a.Backend, l.Width, l.Height, l.Pitch)

	// 2. Import into the render device: ordinary PRIME on its render node.
	if renderNode == "" {
		if renderNode, err = findRenderNode(render); err != nil {
			return err
		}
	}
	rd, err := drm.Open(renderNode)
	if err != nil {
		return err
	}
	defer rd.Close()
	h, err := rd.Import(buf)
	if err != nil {
		return err
	}
	defer h.Close()
	fmt.Printf("imported into %s as handle %d\n", renderNode, h.ID())

	// 3. "Render": the stand-in for GPU rendering is a CPU write with
	// DMA-BUF sync around it.
	if err := compositor.FillPattern(buf, l, 0); err != nil {
		return err
	}
	if !show {
		return nil
	}

	// 4. The compositor's side: DRM master, ADDFB2 with the returned
	// layout, modeset, writeback capture, compare.
	dev, err := compositor.OpenDisplay(display)
	if err != nil {
		return err
	}
	defer dev.Close()
	scr, err := compositor.Show(dev, buf, l)
	if err != nil {
		return err
	}
	defer scr.Close()
	capA, err := c.Allocate(ctx, client.Request{Devices: []string{display}, Image: &protocol.Image{Width: width, Height: height, Format: uint32(drm.FormatXRGB8888), Modifier: uint64(drm.ModLinear)}})
	if err != nil {
		return err
	}
	defer capA.Close()
	if _, err := scr.Capture(ctx, capA.Buffers[0], l); err != nil {
		return err
	}
	r, err := compositor.CompareBuffers(buf, l, capA.Buffers[0], l)
	if err != nil {
		return err
	}
	fmt.Printf("on %s: %s\n", scr, r)
	if !r.Equal() {
		return errors.New("the display shows something else")
	}
	return nil
}

// findRenderNode finds the render node of a device by id or driver name.
func findRenderNode(name string) (string, error) {
	devs, err := drm.Discover(nil)
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		if (d.ID == name || d.Driver == name) && d.Render != nil {
			return d.Render.Path, nil
		}
	}
	fmt.Fprintf(os.Stderr, "no render node found for %q; pass --render-node\n", name)
	return "", fmt.Errorf("no render node for %q", name)
}
