package heap

import (
	"context"
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
		"system":          "kernel:/dev/dma_heap/system",
		"contiguous":      "kernel:/dev/dma_heap/reserved",
		"udmabuf":         "udmabuf:/dev/udmabuf",
		"kernel/system":   "kernel:/dev/dma_heap/system",
		"kernel/reserved": "kernel:/dev/dma_heap/reserved",
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
