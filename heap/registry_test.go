package heap

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// fakeHeap stands in for a kernel backend in naming tests: it allocates
// emulated memory but describes itself as the backend it pretends to be.
type fakeHeap struct {
	info   Info
	allocs atomic.Int32
}

func (f *fakeHeap) Info() Info { return f.info }
func (f *fakeHeap) Alloc(_ context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	f.allocs.Add(1)
	return emulated.Alloc(size, opts.Name)
}

type closeCounter struct{ n *atomic.Int32 }

func (c closeCounter) Close() error { c.n.Add(1); return nil }

func kernelFake(name string, contiguous bool) *fakeHeap {
	return &fakeHeap{info: Info{Name: "kernel/" + name, Backend: BackendKernel, Target: "/dev/dma_heap/" + name,
		KernelName: name, Properties: Properties{Contiguous: contiguous, DeviceImportable: true}}}
}

func names(infos []Info) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Name+"->"+string(i.Backend)+":"+i.Target)
	}
	return out
}

func TestNaming(t *testing.T) {
	udma := &fakeHeap{info: Info{Name: "udmabuf", Backend: BackendUdmabuf, Target: "/dev/udmabuf", Properties: Properties{DeviceImportable: true}}}
	for _, tc := range []struct {
		name  string
		found Found
		want  []string
	}{
		{
			name:  "nothing but the emulated heap",
			found: Found{Emulated: emulatedHeap{}},
			want:  []string{"system->emulated:memfd"},
		},
		{
			name:  "udmabuf only: system is udmabuf, emulated is hidden",
			found: Found{Udmabuf: udma, Emulated: emulatedHeap{}},
			want:  []string{"system->udmabuf:/dev/udmabuf", "udmabuf->udmabuf:/dev/udmabuf"},
		},
		{
			name: "6.1 VM: system + reserved + udmabuf",
			found: Found{
				Kernel:           map[string]Heap{"system": kernelFake("system", false), "reserved": kernelFake("reserved", true)},
				SystemKernelName: "system", CMAKernelName: "reserved", CMAWhy: "cma= on the command line",
				Udmabuf: udma, Emulated: emulatedHeap{},
			},
			want: []string{
				"system->kernel:/dev/dma_heap/system",
				"contiguous->kernel:/dev/dma_heap/reserved",
				"udmabuf->udmabuf:/dev/udmabuf",
				"kernel/reserved->kernel:/dev/dma_heap/reserved",
				"kernel/system->kernel:/dev/dma_heap/system",
			},
		},
		{
			name: "CMA only (no system heap, no udmabuf): system falls back to emulated",
			found: Found{
				Kernel:        map[string]Heap{"linux,cma": kernelFake("linux,cma", true)},
				CMAKernelName: "linux,cma", Emulated: emulatedHeap{},
			},
			want: []string{
				"system->emulated:memfd",
				"contiguous->kernel:/dev/dma_heap/linux,cma",
				"kernel/linux,cma->kernel:/dev/dma_heap/linux,cma",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(&Config{Discover: func(*Config) (Found, error) { return tc.found, nil }})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if diff := cmp.Diff(tc.want, names(r.List())); diff != "" {
				t.Errorf("published names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmulatedNeverClaimsDevices(t *testing.T) {
	r, err := Open(&Config{NoKernel: true, NoUdmabuf: true, NoDRM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, i := range r.List() {
		if i.Backend == BackendEmulated && (i.DeviceImportable || !strings.Contains(i.Note, "not importable")) {
			t.Errorf("emulated heap %s does not say it is CPU only: %+v", i.Name, i)
		}
	}
	if _, err := r.Get("contiguous"); !errors.Is(err, ErrUnknownHeap) {
		t.Errorf("contiguous on an emulated-only system: %v, want ErrUnknownHeap", err)
	}
}

func TestAllocErrors(t *testing.T) {
	testutil.CheckFDs(t)
	r, err := Open(&Config{NoKernel: true, NoUdmabuf: true, NoDRM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		heap string
		size int64
		want error
		msg  string
	}{
		{"system", 0, ErrInvalidSize, "heap system: size 0"},
		{"system", -5, ErrInvalidSize, "at least 1 byte"},
		{"system", 1<<62 + 1, ErrInvalidSize, "too large"},
		{"nope", 4096, ErrUnknownHeap, `no heap named "nope" (available: system)`},
	} {
		buf, err := r.Alloc(ctx, tc.heap, tc.size, AllocOptions{})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Alloc(%s, %d) = %v, want %v containing %q", tc.heap, tc.size, err, tc.want, tc.msg)
		}
		buf.Close()
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Alloc(cctx, "system", 4096, AllocOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Alloc with cancelled context = %v", err)
	}
	buf, err := r.Alloc(ctx, "system", 5000, AllocOptions{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if buf.Size() != 8192 {
		t.Errorf("size = %d, want 8192 (page rounded)", buf.Size())
	}
}

func TestRefreshAndCloseReleaseFDs(t *testing.T) {
	var closed atomic.Int32
	discover := func(*Config) (Found, error) {
		return Found{Emulated: emulatedHeap{}, Closers: []io.Closer{closeCounter{&closed}}}, nil
	}
	r, err := Open(&Config{Discover: discover})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if closed.Load() != 1 {
		t.Errorf("after Refresh %d closers ran, want 1 (the previous discovery's)", closed.Load())
	}
	r.Close()
	r.Close()
	if closed.Load() != 2 {
		t.Errorf("after Close %d closers ran, want 2", closed.Load())
	}
	if _, err := r.Get("system"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v", err)
	}
	if err := r.Refresh(); !errors.Is(err, ErrClosed) {
		t.Errorf("Refresh after Close = %v", err)
	}
	if closed.Load() != 3 {
		t.Errorf("a refused Refresh must release what it discovered; closers ran %d", closed.Load())
	}
	var nilReg *Registry
	if err := nilReg.Close(); err != nil {
		t.Error(err)
	}
}
