package heap

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
)

// In the VM tier (Linux 6.1 and 6.12 with cma=64M) the registry must
// publish the kernel heaps under their logical names and every one must
// hand out real, named, zeroed DMA-BUFs.
func TestIntegrationRegistryOnRealKernel(t *testing.T) {
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.NeedPath(t, "/dev/dma_heap/reserved", "kernel without CONFIG_DMABUF_HEAPS_CMA or booted without cma=?")
	testutil.NeedPath(t, "/dev/udmabuf", "kernel built without CONFIG_UDMABUF?")
	testutil.CheckFDs(t)

	r, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := map[string]string{}
	for _, i := range r.List() {
		got[i.Name] = string(i.Backend) + ":" + i.Target
	}
	want := map[string]string{
		"scanout":               "kernel:/dev/dma_heap/reserved",
		"scanout/platform-vkms": "kernel:/dev/dma_heap/reserved",
		"system":                "kernel:/dev/dma_heap/system",
		"contiguous":            "kernel:/dev/dma_heap/reserved",
		"udmabuf":               "udmabuf:/dev/udmabuf",
		"kernel/system":         "kernel:/dev/dma_heap/system",
		"kernel/reserved":       "kernel:/dev/dma_heap/reserved",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("published heaps (-want +got):\n%s", diff)
	}
	if p := r.Problems(); len(p) != 0 {
		t.Errorf("problems on a clean VM: %v", p)
	}
	c, _ := r.Get("contiguous")
	if i := c.Info(); !i.Contiguous || i.CMATotal == 0 || i.CMAFree == 0 {
		t.Errorf("contiguous heap info lacks CMA facts: %+v", i)
	}

	for name := range want {
		t.Run(name, func(t *testing.T) {
			buf, err := r.Alloc(context.Background(), name, 5000, AllocOptions{Name: "regtest"})
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			if buf.Kind() != dmabuf.KindKernel || buf.Size() != 8192 {
				t.Errorf("kind %v size %d, want a kernel DMA-BUF of 8192 bytes", buf.Kind(), buf.Size())
			}
			st, err := buf.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if st.Name != "regtest" {
				t.Errorf("fdinfo name = %q, want regtest", st.Name)
			}
			m, err := buf.Map(dmabuf.ProtRead)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			err = buf.CPUAccess(dmabuf.Read, func() error {
				for i, b := range m.Bytes() {
					if b != 0 {
						t.Fatalf("byte %d of a fresh buffer is %#x, want 0", i, b)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// needVM gates the tests that need the VM tier's full device set.
func needVM(t *testing.T) {
	t.Helper()
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.NeedPath(t, "/dev/dma_heap/reserved", "kernel without CONFIG_DMABUF_HEAPS_CMA or booted without cma=?")
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedPath(t, "/sys/module/vgem", "vgem not loaded (CONFIG_DRM_VGEM)?")
}

func TestIntegrationScanoutResolvesOnVKMS(t *testing.T) {
	needVM(t)
	testutil.CheckFDs(t)
	r, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := r.Resolution("vkms")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", res)
	// vkms has no IOMMU in sysfs: CMA is tried first and passes.
	if res.Heap != "kernel/reserved" || len(res.Attempts) != 1 || !res.Attempts[0].OK {
		t.Errorf("vkms resolved to %q, want kernel/reserved on the first attempt:\n%s", res.Heap, res)
	}
	h, err := r.Get("scanout/" + res.Device)
	if err != nil {
		t.Fatal(err)
	}
	if i := h.Info(); i.Device != res.Device || !i.Contiguous {
		t.Errorf("scanout heap info %+v", i)
	}
	def, err := r.Get("scanout")
	if err != nil || def.Info().Device != res.Device {
		t.Errorf("default scanout: %v %v", def, err)
	}
	// vgem is render-only: no scanout heap for it.
	if _, err := r.Resolution("vgem"); err == nil {
		t.Error("vgem has a scanout resolution; it has no display")
	}
}

func TestIntegrationAllocateForDisplayAndRender(t *testing.T) {
	needVM(t)
	testutil.CheckFDs(t)
	r, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  Request
		heap string
	}{
		{"device set by size", Request{Devices: []string{"vkms", "vgem"}, Size: 1 << 20}, "kernel/reserved"},
		{"device set by image", Request{Devices: []string{"vkms", "vgem"}, Image: &Image{Width: 1024, Height: 768}}, "kernel/reserved"},
		{"scanout heap by image", Request{Heap: "scanout", Devices: []string{"vgem"}, Image: &Image{Width: 640, Height: 480}}, "scanout"},
		{"system heap for both", Request{Heap: "system", Devices: []string{"vkms", "vgem"}, Image: &Image{Width: 256, Height: 256}}, "system"},
		{"udmabuf for both", Request{Heap: "udmabuf", Devices: []string{"vkms", "vgem"}, Image: &Image{Width: 256, Height: 256}}, "udmabuf"},
		{"render only", Request{Devices: []string{"vgem"}, Size: 4096}, "kernel/system"},
		{"scanout heap, one page", Request{Heap: "scanout", Size: 4096}, "scanout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := r.Allocate(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Buffer.Close()
			if a.Heap != tc.heap {
				t.Errorf("heap %q, want %q (attempts %v)", a.Heap, tc.heap, a.Attempts)
			}
			devs := len(tc.req.Devices)
			if tc.req.Heap == "scanout" {
				devs++
			}
			if len(a.Attempts) != devs {
				t.Errorf("%d device checks, want %d: %v", len(a.Attempts), devs, a.Attempts)
			}
			for _, at := range a.Attempts {
				if !at.OK {
					t.Errorf("attempt failed: %v", at)
				}
			}
			if img := tc.req.Image; img != nil {
				if a.Layout == nil || a.Layout.Pitch != img.Width*4 || a.Buffer.Size() < int64(a.Layout.Pitch)*int64(img.Height) {
					t.Errorf("layout %+v size %d for %+v", a.Layout, a.Buffer.Size(), img)
				}
			}
		})
	}
	// vkms (6.1 and 6.12) refuses framebuffers under 20 (6.1) or 10 pixels
	// (6.12): the refusal names the device and the step.
	_, err = r.Allocate(ctx, Request{Heap: "system", Devices: []string{"vkms"}, Image: &Image{Width: 4, Height: 4}})
	if !errors.Is(err, ErrNoHeap) || !strings.Contains(err.Error(), "refused it at addfb2") {
		t.Errorf("tiny framebuffer: %v, want ErrNoHeap at addfb2", err)
	}
}

func TestIntegrationCMAPressure(t *testing.T) {
	needVM(t)
	testutil.CheckFDs(t)
	r, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	c, err := r.Get("contiguous")
	if err != nil {
		t.Fatal(err)
	}
	total := c.Info().CMATotal
	tooBig := total + 16<<20
	// Larger than the whole CMA area: refused before the kernel is asked.
	_, err = r.Allocate(ctx, Request{Heap: "scanout", Size: tooBig})
	if !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), "can never fit") {
		t.Fatalf("oversized CMA request: %v, want the fail-fast ErrNoMemory", err)
	}
	// Opt-in fallback: vkms accepts system-heap memory (it reads planes
	// through a kernel mapping), so the fallback passes its probe.
	a, err := r.Allocate(ctx, Request{Heap: "scanout", Devices: []string{"vgem"}, Size: tooBig, NonContiguousFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Buffer.Close()
	if a.Heap != "kernel/system" {
		t.Errorf("fallback heap %s, want kernel/system (attempts %v)", a.Heap, a.Attempts)
	}
}
