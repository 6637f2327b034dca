package heap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/internal/testutil"
)

// taggedHeap is a fake backend whose buffers carry a tag in their name, so
// fake devices can tell which backend a buffer came from.
type taggedHeap struct {
	info Info
	tag  string
}

func (h *taggedHeap) Info() Info { return h.info }
func (h *taggedHeap) Alloc(_ context.Context, size int64, _ AllocOptions) (*dmabuf.Buffer, error) {
	return emulated.Alloc(size, h.tag)
}

// fakeDevice accepts buffers whose tag is in accept; a display refuses the
// others at import with EINVAL, like a display without an IOMMU given
// non-contiguous memory.
type fakeDevice struct {
	info   drm.DeviceInfo
	accept map[string]bool
	probes int
}

func (d *fakeDevice) Info() drm.DeviceInfo { return d.info }
func (d *fakeDevice) tagOf(buf *dmabuf.Buffer) string {
	st, err := buf.Stat()
	if err != nil {
		return ""
	}
	return st.Name
}
func (d *fakeDevice) Probe(buf *dmabuf.Buffer, l drm.Layout) (drm.ProbeResult, error) {
	d.probes++
	res := drm.ProbeResult{Device: "/dev/dri/fake", Driver: d.info.Driver, Layout: l}
	if !d.accept[d.tagOf(buf)] {
		res.FailedStep, res.Errno, res.Hint = drm.StepImport, unix.EINVAL, "needs contiguous memory"
		return res, nil
	}
	if l.Pitch%256 != 0 && d.info.Driver == "amdgpu" {
		res.FailedStep, res.Errno = drm.StepAddFB2, unix.EINVAL
		return res, nil
	}
	res.OK = true
	return res, nil
}
func (d *fakeDevice) CheckImport(buf *dmabuf.Buffer) error {
	if !d.accept[d.tagOf(buf)] {
		return unix.EINVAL
	}
	return nil
}
func (d *fakeDevice) AllocDumb(size int64) (*dmabuf.Buffer, error) {
	return emulated.Alloc(size, "dumb")
}
func (d *fakeDevice) Close() error { return nil }

func display(id, driver string, iommu bool, accept ...string) *fakeDevice {
	d := &fakeDevice{info: drm.DeviceInfo{ID: id, Driver: driver, KMS: true, IOMMU: iommu,
		Primary: &drm.Node{Name: "card0", Path: "/dev/dri/card0"}}, accept: map[string]bool{}}
	for _, a := range accept {
		d.accept[a] = true
	}
	return d
}

func render(id, driver string, accept ...string) *fakeDevice {
	d := display(id, driver, true, accept...)
	d.info.KMS, d.info.Primary = false, nil
	d.info.Render = &drm.Node{Name: "renderD128", Path: "/dev/dri/renderD128"}
	return d
}

// vmLike is the 6.1 VM's backends: system, reserved (CMA), udmabuf.
func vmLike(devs ...Device) Found {
	sys := &taggedHeap{info: Info{Name: "kernel/system", Backend: BackendKernel, Target: "/dev/dma_heap/system", Properties: Properties{DeviceImportable: true}}, tag: "system"}
	cma := &taggedHeap{info: Info{Name: "kernel/reserved", Backend: BackendKernel, Target: "/dev/dma_heap/reserved", Properties: Properties{Contiguous: true, DeviceImportable: true}}, tag: "cma"}
	udma := &taggedHeap{info: Info{Name: "udmabuf", Backend: BackendUdmabuf, Target: "/dev/udmabuf", Properties: Properties{DeviceImportable: true}}, tag: "udmabuf"}
	return Found{
		Kernel:           map[string]Heap{"system": sys, "reserved": cma},
		SystemKernelName: "system", CMAKernelName: "reserved", CMAWhy: "cma=",
		Udmabuf: udma, Emulated: emulatedHeap{}, Devices: devs,
	}
}

func openFake(t *testing.T, f Found) *Registry {
	t.Helper()
	r, err := Open(&Config{Discover: func(*Config) (Found, error) { return f, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func attempts(res Resolution) []string {
	var out []string
	for _, a := range res.Attempts {
		s := a.Heap + ":"
		if a.OK {
			s += "ok"
		} else {
			s += a.Step + "/" + a.Errno
		}
		out = append(out, s)
	}
	return out
}

func TestResolverPicksContiguousForDisplayWithoutIOMMU(t *testing.T) {
	testutil.CheckFDs(t)
	vc4 := display("platform-gpu", "vc4", false, "cma", "dumb")
	r := openFake(t, vmLike(vc4))
	res, err := r.Resolution("vc4")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kernel/reserved:ok"}, attempts(res)); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	h, err := r.Get("scanout/platform-gpu")
	if err != nil {
		t.Fatal(err)
	}
	if i := h.Info(); !i.Contiguous || i.Device != "platform-gpu" || !strings.Contains(i.Note, "kernel/reserved") {
		t.Errorf("scanout/platform-gpu info: %+v", i)
	}
	def, err := r.Get("scanout")
	if err != nil || def.Info().Device != "platform-gpu" {
		t.Errorf("default scanout = %v, %v", def, err)
	}
}

func TestResolverOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  *fakeDevice
		want []string
	}{
		{
			name: "behind an IOMMU the system heap comes first",
			dev:  display("pci-0000:00:02.0", "i915", true, "system", "cma", "udmabuf"),
			want: []string{"kernel/system:ok"},
		},
		{
			name: "no IOMMU, no CMA acceptance: falls through to dumb",
			dev:  display("platform-x", "x", false, "dumb"),
			want: []string{"kernel/reserved:import/invalid argument", "kernel/system:import/invalid argument", "udmabuf:import/invalid argument", "dumb/platform-x:ok"},
		},
		{
			name: "IOMMU but only CMA works: CMA tried after udmabuf",
			dev:  display("platform-y", "y", true, "cma"),
			want: []string{"kernel/system:import/invalid argument", "udmabuf:import/invalid argument", "kernel/reserved:ok"},
		},
		{
			name: "nothing works",
			dev:  display("platform-z", "z", false),
			want: []string{"kernel/reserved:import/invalid argument", "kernel/system:import/invalid argument", "udmabuf:import/invalid argument", "dumb/platform-z:import/invalid argument"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openFake(t, vmLike(tc.dev))
			res, err := r.Resolution(tc.dev.info.ID)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, attempts(res)); diff != "" {
				t.Errorf("attempts (-want +got):\n%s", diff)
			}
			_, err = r.Get("scanout/" + tc.dev.info.ID)
			if ok := strings.HasSuffix(tc.want[len(tc.want)-1], ":ok"); ok != (err == nil) {
				t.Errorf("scanout heap published = %v, want %v", err == nil, ok)
			}
		})
	}
}

func TestResolverPrefersLinkedHeap(t *testing.T) {
	f := vmLike(display("platform-gpu", "vc4", false, "vc4", "cma"))
	f.Kernel["vc4"] = &taggedHeap{info: Info{Name: "kernel/vc4", Backend: BackendKernel, Properties: Properties{Contiguous: true, DeviceImportable: true}}, tag: "vc4"}
	r := openFake(t, f)
	res, _ := r.Resolution("platform-gpu")
	if res.Heap != "kernel/vc4" {
		t.Errorf("chose %q, want the linked kernel/vc4; %s", res.Heap, res)
	}
}

func TestResolverNeverUsesEmulated(t *testing.T) {
	r := openFake(t, Found{Emulated: emulatedHeap{}, Devices: []Device{display("platform-a", "a", true, "heapd-probe")}})
	res, _ := r.Resolution("platform-a")
	for _, a := range res.Attempts {
		if a.Backend == BackendEmulated {
			t.Errorf("emulated heap tried: %v", a)
		}
	}
	if _, err := r.Get("scanout"); !errors.Is(err, ErrUnknownHeap) {
		t.Errorf("scanout published from emulated memory: %v", err)
	}
}

func TestAllocateForDeviceSet(t *testing.T) {
	testutil.CheckFDs(t)
	ctx := context.Background()
	// A display without IOMMU (CMA only) and a render device that imports
	// everything but dumb buffers.
	disp := display("platform-vkms", "vkms", false, "cma", "dumb")
	rend := render("platform-vgem", "vgem", "cma", "system", "udmabuf")
	r := openFake(t, vmLike(disp, rend))

	a, err := r.Allocate(ctx, Request{Devices: []string{"vkms", "vgem"}, Image: &Image{Width: 1024, Height: 768}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Buffer.Close()
	if a.Heap != "kernel/reserved" || a.Layout == nil || a.Layout.Pitch != 4096 || a.Buffer.Size() != 4096*768 {
		t.Errorf("allocation = heap %s layout %+v size %d", a.Heap, a.Layout, a.Buffer.Size())
	}

	// A render device that refuses CMA memory: nothing satisfies both.
	picky := render("platform-v3d", "v3d", "system")
	r2 := openFake(t, vmLike(display("platform-gpu", "vc4", false, "cma", "dumb"), picky))
	_, err = r2.Allocate(ctx, Request{Devices: []string{"platform-gpu", "platform-v3d"}, Size: 1 << 20})
	if !errors.Is(err, ErrNoHeap) {
		t.Fatalf("Allocate = %v, want ErrNoHeap", err)
	}
	for _, want := range []string{"kernel/reserved: platform-v3d refused it at import", "kernel/system: platform-gpu refused it at import", "dumb/platform-gpu: platform-v3d refused it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	if _, err := r.Allocate(ctx, Request{Devices: []string{"nope"}, Size: 4096}); !errors.Is(err, ErrUnknownDevice) || !strings.Contains(err.Error(), "platform-vkms (vkms)") {
		t.Errorf("unknown device: %v", err)
	}
}

func TestAllocateScanoutHeapImpliesDevice(t *testing.T) {
	disp := display("platform-amd", "amdgpu", true, "system")
	r := openFake(t, vmLike(disp))
	a, err := r.Allocate(context.Background(), Request{Heap: "scanout/platform-amd", Image: &Image{Width: 1000, Height: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Buffer.Close()
	if a.Layout.Pitch != 4096 || len(a.Attempts) != 1 || !a.Attempts[0].OK {
		t.Errorf("amdgpu layout %+v attempts %v: want pitch aligned to 256 and a passing probe", a.Layout, a.Attempts)
	}
}

func TestImageLayout(t *testing.T) {
	for _, tc := range []struct {
		img     Image
		drivers []string
		pitch   uint32
		size    int64
		err     bool
	}{
		{Image{Width: 1024, Height: 768}, []string{"vkms", "vgem"}, 4096, 4096 * 768, false},
		{Image{Width: 1000, Height: 10}, []string{"vkms"}, 4032, 40320, false},
		{Image{Width: 1000, Height: 10}, []string{"vkms", "amdgpu"}, 4096, 40960, false},
		{Image{Width: 640, Height: 480, Format: drm.FourCC('R', 'G', '1', '6')}, nil, 1280, 1280 * 480, false},
		{Image{Width: 0, Height: 10}, nil, 0, 0, true},
		{Image{Width: 100000, Height: 10}, nil, 0, 0, true},
		{Image{Width: 10, Height: 10, Format: drm.FourCC('N', 'V', '1', '2')}, nil, 0, 0, true},
	} {
		l, size, err := imageLayout(tc.img, tc.drivers)
		if tc.err {
			if !errors.Is(err, ErrInvalidSize) {
				t.Errorf("%+v: err = %v, want ErrInvalidSize", tc.img, err)
			}
			continue
		}
		if err != nil || l.Pitch != tc.pitch || size != tc.size {
			t.Errorf("%+v %v: pitch %d size %d err %v; want pitch %d size %d", tc.img, tc.drivers, l.Pitch, size, err, tc.pitch, tc.size)
		}
	}
}

// fullHeap is a contiguous heap that is out of memory.
type fullHeap struct{ taggedHeap }

func (h *fullHeap) Alloc(context.Context, int64, AllocOptions) (*dmabuf.Buffer, error) {
	return nil, fmt.Errorf("CMA exhausted: %w", ErrNoMemory)
}

func TestNonContiguousFallbackIsOptInAndProbed(t *testing.T) {
	testutil.CheckFDs(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		dev      *fakeDevice
		fallback bool
		heap     string // "" = error expected
	}{
		{"no fallback asked", display("platform-gpu", "vc4", true, "cma", "system"), false, ""},
		{"fallback to a heap the display accepts", display("platform-gpu", "vc4", true, "cma", "system"), true, "kernel/system"},
		{"fallback refused by the display's probe", display("platform-gpu", "vc4", false, "cma"), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := vmLike(tc.dev)
			full := &fullHeap{*f.Kernel["reserved"].(*taggedHeap)}
			f.Kernel["reserved"] = full
			// Resolve scanout to the (now full) CMA heap first.
			r := openFake(t, f)
			a, err := r.Allocate(ctx, Request{Heap: "kernel/reserved", Devices: []string{tc.dev.info.ID}, Size: 1 << 20, NonContiguousFallback: tc.fallback})
			if tc.heap == "" {
				if err == nil {
					a.Buffer.Close()
					t.Fatalf("allocation succeeded from %s", a.Heap)
				}
				if !IsNoMemory(err) && !errors.Is(err, ErrNoHeap) {
					t.Errorf("error %v is neither out-of-memory nor no-heap", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer a.Buffer.Close()
			if a.Heap != tc.heap || a.Attempts[0].Step != "alloc" {
				t.Errorf("heap %s attempts %v", a.Heap, a.Attempts)
			}
		})
	}
}
