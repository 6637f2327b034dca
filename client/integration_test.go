package client_test

import (
	"testing"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// Integration tests: they need the VM tier's kernel (the system and CMA
// heaps, vgem, vkms) and root. Elsewhere they skip with a hint; with
// HEAPD_REQUIRE_DEVICES=1 they fail instead. heapd is the binary on PATH
// there (the VM tier packs cmd/heapd into /bin).

// vgemRender opens vgem's render node.
func vgemRender(t *testing.T) *drm.Device {
	t.Helper()
	testutil.NeedPath(t, "/dev/dri", "kernel built without DRM?")
	devs, err := drm.Discover(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Driver == "vgem" {
			dev, err := d.Open(drm.NodeRender)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dev.Close() })
			return dev
		}
	}
	testutil.Missing(t, "no vgem device: kernel built without CONFIG_DRM_VGEM (or module not loaded)?")
	return nil
}

// importCheck imports buf into dev (PRIME), exports it again and checks
// that the export is the same DMA-BUF.
func importCheck(t *testing.T, dev *drm.Device, buf *dmabuf.Buffer) {
	t.Helper()
	h, err := dev.Import(buf)
	if err != nil {
		t.Fatalf("PRIME import into %s: %v", dev, err)
	}
	defer h.Close()
	back, err := dev.Export(h)
	if err != nil {
		t.Fatalf("PRIME export: %v", err)
	}
	defer back.Close()
	a, err := buf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := back.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if a.Inode != b.Inode {
		t.Errorf("vgem exported inode %d, the buffer is %d", b.Inode, a.Inode)
	}
}

// Real heaps through the real daemon: each buffer is a kernel DMA-BUF,
// named after its owner, with the pattern intact, and imports into vgem.
func TestIntegrationVgemImport(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.CheckFDs(t)
	dev := vgemRender(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	ctx := ctxT(t)
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	for _, name := range []string{"system", "contiguous"} {
		t.Run(name, func(t *testing.T) {
			a, err := c.Allocate(ctx, client.Request{Heap: name, Size: 1 << 20, Count: 2, Label: "vm"})
			if err != nil {
				t.Fatalf("%v\n%s", err, d.Log())
			}
			defer a.Close()
			if a.Emulated() || a.Backend != "kernel" || a.Flags&protocol.BufferDeviceImportable == 0 {
				t.Errorf("allocation %+v", a)
			}
			if name == "contiguous" && a.Flags&protocol.BufferContiguous == 0 {
				t.Error("contiguous heap's buffer not flagged contiguous")
			}
			for _, b := range a.Buffers {
				if b.Kind() != dmabuf.KindKernel {
					t.Fatalf("buffer kind %v", b.Kind())
				}
				st, err := b.Stat()
				if err != nil || st.Name != a.Name || st.Name != "heapd:uid0:client.test:vm" {
					t.Errorf("buffer name %q (%v), reply %q", st.Name, err, a.Name)
				}
				if ok, err := fillCheck(b); !ok || err != nil {
					t.Errorf("pattern: %v %v", ok, err)
				}
				importCheck(t, dev, b)
			}
		})
	}
	// A device set: the resolver picks memory vkms scans out (probed with
	// ADDFB2 in the returned layout) and vgem imports.
	t.Run("device set", func(t *testing.T) {
		a, err := c.Allocate(ctx, client.Request{Devices: []string{"vkms", "vgem"},
			Image: &protocol.Image{Width: 640, Height: 480, Format: uint32(drm.FormatXRGB8888), Modifier: protocol.ModifierInvalid}})
		if err != nil {
			t.Fatalf("%v\n%s", err, d.Log())
		}
		defer a.Close()
		if a.Layout.Pitch != 2560 || a.Layout.Modifier != protocol.ModifierLinear || a.Size < 2560*480 {
			t.Errorf("layout %+v size %d", a.Layout, a.Size)
		}
		t.Logf("resolver chose %s", a.Heap)
		importCheck(t, dev, a.Buffers[0])
	})
	c.Close()
	d.WaitFDs(t, baseline)
}

// A process running as nobody gets real kernel memory through the daemon
// without access to /dev/dma_heap, and is refused contiguous memory by the
// built-in policy.
func TestIntegrationOtherUID(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	res := runHelper(t, d, "nobody", 65534, 65534, "HEAPD_HELPER_HEAP=system")
	if res.Error != "" || !res.Kernel || res.Emulated || !res.Verified || res.UID != 65534 {
		t.Errorf("system heap as nobody: %+v", res)
	}
	res = runHelper(t, d, "nobody", 65534, 65534, "HEAPD_HELPER_HEAP=contiguous")
	if protocol.Code(res.Code) != protocol.CodeDenied {
		t.Errorf("contiguous heap as nobody: %+v, want DENIED", res)
	}
	d.WaitFDs(t, baseline)
}
