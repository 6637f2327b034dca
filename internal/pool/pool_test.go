package pool

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/metrics"
	testutil "github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// fakeHeap is an emulated heap whose Info the test controls: a fake is
// fine here, the pool's logic sits above the kernel (the VM tier runs
// heapd's pool on real heaps through heapctl bench).
type fakeHeap struct {
	mu     sync.Mutex
	info   heap.Info
	allocs int
}

func (h *fakeHeap) Info() heap.Info {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.info
}

func (h *fakeHeap) setCMAFree(n int64) {
	h.mu.Lock()
	h.info.CMAFree = n
	h.mu.Unlock()
}

func (h *fakeHeap) Alloc(_ context.Context, size int64, opts heap.AllocOptions) (*dmabuf.Buffer, error) {
	h.mu.Lock()
	h.allocs++
	if h.info.Contiguous {
		h.info.CMAFree -= size // never given back: enough for the tests
	}
	h.mu.Unlock()
	return emulated.Alloc(size, opts.Name)
}

type fakeSource struct{ heaps map[string]*fakeHeap }

func (s *fakeSource) List() []heap.Info {
	var out []heap.Info
	for _, h := range s.heaps {
		out = append(out, h.Info())
	}
	return out
}
func (s *fakeSource) Problems() []string { return nil }
func (s *fakeSource) Get(name string) (heap.Heap, error) {
	if h, ok := s.heaps[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("%q: %w", name, heap.ErrUnknownHeap)
}
func (s *fakeSource) Allocate(ctx context.Context, req heap.Request) (*heap.Allocation, error) {
	h, err := s.Get(req.Heap)
	if err != nil {
		return nil, err
	}
	b, err := h.Alloc(ctx, req.Size, heap.AllocOptions{Name: req.Name})
	if err != nil {
		return nil, err
	}
	return &heap.Allocation{Buffer: b, Heap: req.Heap}, nil
}

func newSource() *fakeSource {
	return &fakeSource{heaps: map[string]*fakeHeap{
		"system": {info: heap.Info{Name: "system", Backend: heap.BackendEmulated}},
		"contiguous": {info: heap.Info{Name: "contiguous", Backend: heap.BackendKernel,
			Properties: heap.Properties{Contiguous: true, CMATotal: 256 << 20, CMAFree: 200 << 20}}},
		"scanout": {info: heap.Info{Name: "scanout", Backend: heap.BackendKernel, Device: "platform-vc4"}},
	}}
}

// waitFor polls cond until it holds or the test's patience ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newPool(t *testing.T, src Source, cfg Config) *Pool {
	t.Helper()
	p, err := New(src, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestNewRejects(t *testing.T) {
	src := newSource()
	for _, cfg := range []*Config{nil, {}, {MaxBytes: -1}, {MaxBytes: 1 << 20, Sizes: []int64{0}}, {MaxBytes: 1 << 20, Name: strings.Repeat("x", 40)}} {
		if p, err := New(src, cfg); err == nil {
			p.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(nil, &Config{MaxBytes: 1}); err == nil {
		t.Error("New(nil source) succeeded")
	}
}

func TestHitMissAndIsolation(t *testing.T) {
	testutil.CheckFDs(t)
	src := newSource()
	met := metrics.New(&metrics.Config{NoRuntime: true})
	p := newPool(t, src, Config{MaxBytes: 64 << 20, Sizes: []int64{4096, 1 << 20}, Depth: 2, Metrics: met})
	// Default heaps: system only (not contiguous, not a device's).
	waitFor(t, "the system pools to fill", func() bool { return p.Stats().Buffers == 4 })
	if got, want := p.Stats().Bytes, int64(2*4096+2*(1<<20)); got != want {
		t.Fatalf("pooled bytes = %d, want %d", got, want)
	}
	ctx := context.Background()
	seen := map[uint64]bool{}
	for i := range 6 {
		a, err := p.Allocate(ctx, heap.Request{Heap: "system", Size: 1 << 20, Name: "client"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := a.Buffer.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if seen[st.Inode] {
			t.Fatalf("allocation %d: inode %d handed out twice", i, st.Inode)
		}
		seen[st.Inode] = true
		m, err := a.Buffer.Map(dmabuf.ProtReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range m.Bytes() {
			if v != 0 {
				t.Fatalf("allocation %d: byte %d is %#x, want 0: data crossed users", i, j, v)
			}
		}
		for j := range m.Bytes() {
			m.Bytes()[j] = 0xa5 // a secret the next client must never see
		}
		m.Close()
		a.Buffer.Close()
	}
	s := p.Stats()
	if s.Hits < 2 || s.Hits+s.Misses != 6 {
		t.Errorf("stats %+v: want at least 2 hits (the warm pool) and 6 eligible requests", s)
	}
	if got := poolCounter(t, met, "heapd_pool_hits_total"); got != float64(s.Hits) {
		t.Errorf("heapd_pool_hits_total = %v, want %d", got, s.Hits)
	}
	if got := poolCounter(t, met, "heapd_pool_misses_total"); got != float64(s.Misses) {
		t.Errorf("heapd_pool_misses_total = %v, want %d", got, s.Misses)
	}
	// Not covered: another size, a device set, a heap not pooled.
	for _, req := range []heap.Request{
		{Heap: "system", Size: 3 << 20},
		{Heap: "contiguous", Size: 4096},
		{Heap: "scanout", Size: 4096},
	} {
		a, err := p.Allocate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		a.Buffer.Close()
	}
	if s2 := p.Stats(); s2.Hits+s2.Misses != 6 {
		t.Errorf("uncovered requests counted: %+v", s2)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Buffers != 0 || s.Bytes != 0 {
		t.Errorf("after Close: %+v", s)
	}
}

// poolCounter sums a pool counter family.
func poolCounter(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, s := range mf.GetMetric() {
				sum += s.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestBudget(t *testing.T) {
	src := newSource()
	p := newPool(t, src, Config{MaxBytes: 3 << 20, Sizes: []int64{1 << 20}, Depth: 8})
	waitFor(t, "the pool to fill its budget", func() bool { return p.Stats().Buffers == 3 })
	time.Sleep(50 * time.Millisecond)
	if s := p.Stats(); s.Bytes > 3<<20 || s.Buffers != 3 {
		t.Errorf("stats %+v: budget of 3 MiB exceeded", s)
	}
}

func TestContiguousOptInAndCMADrain(t *testing.T) {
	src := newSource()
	cma := src.heaps["contiguous"]
	p := newPool(t, src, Config{MaxBytes: 16 << 20, Sizes: []int64{1 << 20}, Depth: 2, Heaps: []string{"contiguous"}, CMAReserve: 100 << 20})
	waitFor(t, "the contiguous pool to fill", func() bool { return p.Stats().Buffers == 2 })
	cma.setCMAFree(50 << 20) // below the reserve
	p.wake()
	waitFor(t, "the contiguous pool to drain", func() bool { return p.Stats().Buffers == 0 })
	before := func() int { cma.mu.Lock(); defer cma.mu.Unlock(); return cma.allocs }()
	p.wake()
	time.Sleep(50 * time.Millisecond)
	if after := func() int { cma.mu.Lock(); defer cma.mu.Unlock(); return cma.allocs }(); after != before {
		t.Errorf("refilled %d buffers while CMA was low", after-before)
	}
	// A miss still allocates directly.
	a, err := p.Allocate(context.Background(), heap.Request{Heap: "contiguous", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	a.Buffer.Close()
	cma.setCMAFree(200 << 20)
	p.wake()
	waitFor(t, "the contiguous pool to refill", func() bool { return p.Stats().Buffers == 2 })
}

func TestPoolStopsAtCMAReserve(t *testing.T) {
	src := newSource()
	cma := src.heaps["contiguous"]
	cma.setCMAFree(103 << 20)
	p := newPool(t, src, Config{MaxBytes: 16 << 20, Sizes: []int64{1 << 20}, Depth: 8, Heaps: []string{"contiguous"}, CMAReserve: 100 << 20})
	waitFor(t, "the contiguous pool to fill to the reserve", func() bool { return p.Stats().Buffers == 3 })
	time.Sleep(50 * time.Millisecond)
	if s := p.Stats(); s.Buffers != 3 || cma.Info().CMAFree != 100<<20 {
		t.Errorf("stats %+v, CmaFree %d: the pool went below the reserve", s, cma.Info().CMAFree)
	}
}

func TestRefreshDrains(t *testing.T) {
	src := newSource()
	p := newPool(t, src, Config{MaxBytes: 16 << 20, Sizes: []int64{4096}, Depth: 3})
	waitFor(t, "fill", func() bool { return p.Stats().Buffers == 3 })
	p.mu.Lock()
	old := append([]*dmabuf.Buffer(nil), p.free[key{"system", 4096}]...)
	p.mu.Unlock()
	if err := p.Refresh(); err != nil {
		t.Fatal(err)
	}
	for _, b := range old {
		if b.FD() >= 0 {
			t.Errorf("a buffer pooled before Refresh is still open")
		}
	}
	waitFor(t, "refill", func() bool { return p.Stats().Buffers == 3 })
}

func TestCloseIdempotent(t *testing.T) {
	var nilPool *Pool
	if err := nilPool.Close(); err != nil {
		t.Error(err)
	}
	p, err := New(newSource(), &Config{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	a, err := p.Allocate(context.Background(), heap.Request{Heap: "system", Size: 4096})
	if err != nil {
		t.Fatal(err)
	}
	a.Buffer.Close()
}
