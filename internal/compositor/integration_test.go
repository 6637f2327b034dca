package compositor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/testutil"
)

// Integration tests (VM tier: vkms with enable_writeback=1, the system
// and CMA heaps, debugfs, root). Elsewhere they skip with a hint.

const (
	width, height = 1024, 768
	frameBytes    = width * height * 4
)

var frame = drm.Layout{Width: width, Height: height, Format: drm.FormatXRGB8888}

// vkmsInfo returns the discovered vkms device.
func vkmsInfo(t *testing.T) drm.DeviceInfo {
	t.Helper()
	testutil.NeedRoot(t)
	testutil.NeedPath(t, "/dev/dri", "kernel built without DRM?")
	devs, err := drm.Discover(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Driver == "vkms" && d.Primary != nil {
			return d
		}
	}
	testutil.Missing(t, "no vkms device: kernel built without CONFIG_DRM_VKMS (or module not loaded)?")
	panic("unreachable")
}

// openDisplay opens vkms as master and closes it when the test ends,
// checking that master is free again afterwards.
func openDisplay(t *testing.T) (*drm.Device, drm.DeviceInfo) {
	t.Helper()
	info := vkmsInfo(t)
	d, err := OpenDisplay("vkms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		// Close dropped master: another opener can take it.
		again, err := drm.OpenMaster(info.Primary.Path)
		if err != nil {
			t.Errorf("master not released by Close: %v", err)
			return
		}
		again.Close()
	})
	return d, info
}

// alloc allocates size bytes from the named heap, closed when the test ends.
func alloc(t *testing.T, heap string, size int64) *dmabuf.Buffer {
	t.Helper()
	testutil.NeedPath(t, "/dev/dma_heap/"+heap, "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM/CMA, or no cma= on the command line?")
	h, err := dmaheap.Open(heap)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b, err := h.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// framebuffers counts the framebuffers debugfs lists for the device.
func framebuffers(t *testing.T, info drm.DeviceInfo) int {
	t.Helper()
	path := fmt.Sprintf("/sys/kernel/debug/dri/%d/framebuffer", info.Primary.Minor)
	testutil.NeedPath(t, path, "debugfs not mounted or CONFIG_DEBUG_FS off?")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("framebuffer["))
}

// attachments returns the devices debugfs dma_buf/bufinfo lists as
// attached to buf: an import (handle or framebuffer) keeps one.
func attachments(t *testing.T, buf *dmabuf.Buffer) []string {
	t.Helper()
	const bufinfo = "/sys/kernel/debug/dma_buf/bufinfo"
	testutil.NeedPath(t, bufinfo, "debugfs not mounted or CONFIG_DEBUG_FS off?")
	var st unix.Stat_t
	if err := unix.Fstat(buf.FD(), &st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bufinfo)
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	in, inDevs, found := false, false, false
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Split(line, "\t"); len(f) >= 7 && !strings.HasPrefix(line, "\t") {
			n, err := strconv.ParseUint(f[5], 10, 64)
			in, inDevs = err == nil && n == st.Ino, false
			found = found || in
			continue
		}
		switch {
		case !in:
		case line == "\tAttached Devices:":
			inDevs = true
		case strings.HasPrefix(line, "Total "):
			in = false
		case inDevs && strings.HasPrefix(line, "\t"):
			devs = append(devs, strings.TrimPrefix(line, "\t"))
		}
	}
	if !found {
		t.Fatalf("buffer inode %d not in %s", st.Ino, bufinfo)
	}
	return devs
}

// requireReleased checks that nothing of the Screen is left: the
// framebuffer count is back to before, no GEM handle is open and no buffer
// is attached to vkms any more.
//
// The kernel drops a writeback job's framebuffer reference from a worker
// after the job's fence has signalled, so the check polls for a moment.
func requireReleased(t *testing.T, d *drm.Device, info drm.DeviceInfo, fbsBefore int, bufs ...*dmabuf.Buffer) {
	t.Helper()
	if n := d.OpenHandles(); n != 0 {
		t.Errorf("%d GEM handles still open", n)
	}
	var problems []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		problems = problems[:0]
		if n := framebuffers(t, info); n != fbsBefore {
			problems = append(problems, fmt.Sprintf("%d framebuffers after Close, %d before: leaked", n, fbsBefore))
		}
		for i, b := range bufs {
			if a := attachments(t, b); len(a) != 0 {
				problems = append(problems, fmt.Sprintf("buffer %d still attached to %v", i, a))
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// show puts buf on the display and closes the Screen when the test ends.
func show(t *testing.T, d *drm.Device, buf *dmabuf.Buffer) *Screen {
	t.Helper()
	s, err := Show(d, buf, frame)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// The proof: a buffer from a heap, filled with the pattern by the
// CPU, is shown on Virtual-1, captured through Writeback-1 into a second
// buffer, and the capture is the pattern bit for bit; the capture is
// saved as a PNG that decodes to the same pixels; nothing leaks.
func TestIntegrationWritebackCapture(t *testing.T) {
	for _, heaps := range [][2]string{{"system", "reserved"}, {"reserved", "system"}} {
		t.Run(heaps[0]+"-to-"+heaps[1], func(t *testing.T) {
			testutil.CheckFDs(t)
			d, info := openDisplay(t)
			fbsBefore := framebuffers(t, info)
			src := alloc(t, heaps[0], frameBytes)
			dst := alloc(t, heaps[1], frameBytes)
			if err := FillPattern(src, frame, 0x123456); err != nil {
				t.Fatal(err)
			}
			s, err := Show(d, src, frame)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("showing %v, framebuffer %d", s, s.Framebuffer())
			if s.Connector().Name != "Virtual-1" || s.Mode().HDisplay != width || !s.Mode().Preferred() {
				t.Errorf("shown on %s in %v, want Virtual-1 at vkms's preferred 1024x768", s.Connector().Name, s.Mode())
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			st, err := s.Capture(ctx, dst, frame)
			if err != nil {
				s.Close()
				t.Fatal(err)
			}
			t.Logf("captured via %s, fence after %v", st.Writeback, st.FenceLatency)
			r, err := CompareBuffers(src, frame, dst, frame)
			if err != nil {
				s.Close()
				t.Fatal(err)
			}
			t.Logf("compare: %v", r)
			if !r.Exact() {
				t.Errorf("capture differs from the shown buffer: %v", r)
			}

			path := filepath.Join(t.TempDir(), "capture.png")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := WritePNG(f, dst, frame); err != nil {
				f.Close()
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			checkPNG(t, path, 0x123456)

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			requireReleased(t, d, info, fbsBefore, src, dst)
		})
	}
}

// checkPNG decodes the PNG at path and compares sample pixels with the
// pattern.
func checkPNG(t *testing.T, path string, seed uint32) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s does not decode: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != width || b.Dy() != height {
		t.Fatalf("PNG is %v", b)
	}
	for _, pt := range [][2]int{{0, 0}, {width - 1, height - 1}, {511, 300}, {33, 700}} {
		p := PatternPixel(pt[0], pt[1], seed)
		want := color.NRGBA{R: byte(p >> 16), G: byte(p >> 8), B: byte(p), A: 0xff}
		if got := color.NRGBAModel.Convert(img.At(pt[0], pt[1])); got != want {
			t.Errorf("PNG pixel (%d,%d) = %v, want %v", pt[0], pt[1], got, want)
		}
	}
	if st, err := f.Stat(); err == nil {
		t.Logf("%s: %d bytes", filepath.Base(path), st.Size())
	}
}

// What vkms writes into the X byte of an XRGB8888 capture: the source's X
// byte is ignored on scanout, and the writeback writes 0xff.
func TestIntegrationWritebackXByte(t *testing.T) {
	testutil.CheckFDs(t)
	d, info := openDisplay(t)
	fbsBefore := framebuffers(t, info)
	src := alloc(t, "system", frameBytes)
	dst := alloc(t, "system", frameBytes)
	m, err := src.Map(dmabuf.ProtReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	err = src.CPUAccess(dmabuf.Write, func() error {
		FillPatternBytes(m.Bytes(), frame, 7)
		pix := m.Bytes()
		for i := 0; i < frameBytes; i += 4 {
			pix[i+3] = byte(i / 4) // X bytes 0..255, not 0xff
		}
		return nil
	})
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := show(t, d, src)
	if _, err := s.Capture(t.Context(), dst, frame); err != nil {
		t.Fatal(err)
	}
	r, err := CompareBuffers(src, frame, dst, frame)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compare: %v", r)
	if !r.Equal() {
		t.Errorf("colours differ: %v", r)
	}
	got, err := ReadPixels(dst, frame)
	if err != nil {
		t.Fatal(err)
	}
	xs := map[byte]int{}
	for i := 3; i < frameBytes; i += 4 {
		xs[got[i]]++
	}
	t.Logf("X bytes of the capture: %v", xs)
	if len(xs) != 1 || xs[0xff] != width*height {
		t.Errorf("X bytes of the capture %v, want all 0xff", xs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireReleased(t, d, info, fbsBefore, src, dst)
}

// Close puts the display back as Show found it: here off (the VM has no
// fbdev console), with no framebuffer on the plane.
func TestIntegrationWritebackRestore(t *testing.T) {
	testutil.CheckFDs(t)
	d, info := openDisplay(t)
	res, err := d.Resources()
	if err != nil {
		t.Fatal(err)
	}
	before, err := d.CRTC(res.CRTCs[0])
	if err != nil {
		t.Fatal(err)
	}
	src := alloc(t, "reserved", frameBytes)
	if err := FillPattern(src, frame, 1); err != nil {
		t.Fatal(err)
	}
	s, err := Show(d, src, frame)
	if err != nil {
		t.Fatal(err)
	}
	during, err := d.CRTC(res.CRTCs[0])
	if err != nil {
		t.Fatal(err)
	}
	if during.Mode == nil || during.FBID != s.Framebuffer() {
		t.Errorf("CRTC while shown: %+v, want framebuffer %d", during, s.Framebuffer())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Capture(t.Context(), src, frame); !errors.Is(err, ErrClosed) {
		t.Errorf("Capture after Close: %v, want ErrClosed", err)
	}
	after, err := d.CRTC(res.CRTCs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CRTC before %+v, after %+v", before, after)
	if (after.Mode == nil) != (before.Mode == nil) || after.FBID != before.FBID {
		t.Errorf("CRTC after Close %+v, want as before %+v", after, before)
	}
	requireReleased(t, d, info, framebuffers(t, info), src)
}

// Wrong sizes fail early, and a failing Show or Capture leaves nothing.
func TestIntegrationWritebackErrors(t *testing.T) {
	testutil.CheckFDs(t)
	d, info := openDisplay(t)
	fbsBefore := framebuffers(t, info)
	src := alloc(t, "system", frameBytes)
	odd := drm.Layout{Width: 1000, Height: 700}
	if s, err := Show(d, src, odd); !errors.Is(err, ErrNoMode) {
		s.Close()
		t.Errorf("Show 1000x700: %v, want ErrNoMode", err)
	} else {
		t.Log(err)
	}
	if s, err := Show(d, src, drm.Layout{Width: 2048, Height: 2048}); !errors.Is(err, drm.ErrBadLayout) {
		s.Close()
		t.Errorf("Show of a layout larger than the buffer: %v, want ErrBadLayout", err)
	}
	requireReleased(t, d, info, fbsBefore, src)

	s := show(t, d, src)
	small := alloc(t, "system", 640*480*4)
	if _, err := s.Capture(t.Context(), small, drm.Layout{Width: 640, Height: 480}); !errors.Is(err, drm.ErrBadLayout) {
		t.Errorf("Capture at 640x480 of a 1024x768 mode: %v, want ErrBadLayout", err)
	}
	// A format the writeback connector cannot write: the kernel refuses
	// the commit, and Capture still moves the CRTC back and cleans up.
	ar := frame
	ar.Format = drm.FormatARGB8888
	if _, err := s.Capture(t.Context(), alloc(t, "system", frameBytes), ar); err == nil {
		t.Log("vkms accepted an ARGB8888 writeback framebuffer")
	} else {
		t.Logf("ARGB8888 writeback: %v", err)
	}
	// The display still works afterwards.
	dst := alloc(t, "system", frameBytes)
	if err := FillPattern(src, frame, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Capture(t.Context(), dst, frame); err != nil {
		t.Fatal(err)
	}
	if r, err := CompareBuffers(src, frame, dst, frame); err != nil || !r.Exact() {
		t.Errorf("capture after the failures: %v, %v", r, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Capture(ctx, dst, frame); !errors.Is(err, context.Canceled) {
		t.Errorf("Capture with a cancelled context: %v, want Canceled", err)
	}
	// A context that ends while the writeback is in flight: Capture waits
	// for it anyway, so the pipeline keeps working.
	for _, d := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		_, err := s.Capture(ctx, dst, frame)
		cancel()
		t.Logf("Capture with a %v deadline: %v", d, err)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Capture with a %v deadline: %v", d, err)
		}
	}
	if err := FillPattern(src, frame, 6); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Capture(t.Context(), dst, frame); err != nil {
		t.Fatalf("capture after the interrupted ones: %v", err)
	}
	if r, err := CompareBuffers(src, frame, dst, frame); err != nil || !r.Exact() {
		t.Errorf("capture after the interrupted ones: %v, %v", r, err)
	}
	// A stuck writeback left vkms composing every frame: about 9 vblanks
	// per flip (6.5 flips/s at 60 Hz on 6.1). The first flips after a
	// capture are slow on 6.12 too, so the bar is a quarter of the rate
	// over 30 frames.
	st, err := s.Flip(t.Context(), []*dmabuf.Buffer{src, dst}, frame, 30)
	t.Logf("flips after the interrupted captures: %v", st)
	if err != nil || st.FlipsPerSecond < st.RefreshHz/4 {
		t.Errorf("flips after the interrupted captures: %v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireReleased(t, d, info, fbsBefore, src, small, dst)
}

// Flip between a 3-buffer swapchain and report flips per second against
// the mode's refresh rate; afterwards Show's buffer is on screen again
// (the capture proves it) and nothing leaks.
func TestIntegrationFlipSwapchain(t *testing.T) {
	testutil.CheckFDs(t)
	d, info := openDisplay(t)
	fbsBefore := framebuffers(t, info)
	front := alloc(t, "reserved", frameBytes)
	if err := FillPattern(front, frame, 0); err != nil {
		t.Fatal(err)
	}
	chain := make([]*dmabuf.Buffer, 3)
	for i := range chain {
		chain[i] = alloc(t, "system", frameBytes)
		if err := FillPattern(chain[i], frame, uint32(i+1)<<16); err != nil {
			t.Fatal(err)
		}
	}
	s := show(t, d, front)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const frames = 120
	st, err := s.Flip(ctx, chain, frame, frames)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flip: %v (%.0f%% of the refresh rate; %d vblanks, %d EBUSY retries)", st, 100*st.FlipsPerSecond/st.RefreshHz, st.Vblanks, st.Busy)
	if st.Frames != frames || st.FlipsPerSecond <= 0 || st.RefreshHz < 55 || st.RefreshHz > 65 {
		t.Errorf("stats %+v", st)
	}
	// One flip per vblank at most: a rate well above the refresh rate
	// would mean the events do not wait for vblanks.
	if st.KernelFlipsPerSecond > st.RefreshHz*1.05 {
		t.Errorf("kernel flip rate %.1f above the refresh rate %.2f", st.KernelFlipsPerSecond, st.RefreshHz)
	}
	if st.Vblanks < frames-1 {
		t.Errorf("%d vblanks for %d flips", st.Vblanks, frames)
	}

	dst := alloc(t, "system", frameBytes)
	if _, err := s.Capture(ctx, dst, frame); err != nil {
		t.Fatal(err)
	}
	if r, err := CompareBuffers(front, frame, dst, frame); err != nil || !r.Exact() {
		t.Errorf("after Flip the display does not show Show's buffer again: %v, %v", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireReleased(t, d, info, fbsBefore, append(chain, front, dst)...)
}

// Flip refuses empty swapchains and buffers of the wrong size, stops at a
// cancelled context, and leaves nothing behind on any of these paths.
func TestIntegrationFlipErrors(t *testing.T) {
	testutil.CheckFDs(t)
	d, info := openDisplay(t)
	fbsBefore := framebuffers(t, info)
	front := alloc(t, "system", frameBytes)
	s := show(t, d, front)
	if _, err := s.Flip(t.Context(), nil, frame, 3); err == nil {
		t.Error("Flip without buffers succeeded")
	}
	small := alloc(t, "system", 640*480*4)
	if _, err := s.Flip(t.Context(), []*dmabuf.Buffer{front, small}, drm.Layout{Width: 640, Height: 480}, 3); !errors.Is(err, drm.ErrBadLayout) {
		t.Errorf("Flip of 640x480 buffers on a 1024x768 mode: %v, want ErrBadLayout", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Flip(ctx, []*dmabuf.Buffer{front}, frame, 3); !errors.Is(err, context.Canceled) {
		t.Errorf("Flip with a cancelled context: %v, want Canceled", err)
	}
	st, err := s.Flip(t.Context(), []*dmabuf.Buffer{front}, frame, 1)
	if err != nil || st.Frames != 1 {
		t.Errorf("one-frame Flip: %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireReleased(t, d, info, fbsBefore, front, small)
}
