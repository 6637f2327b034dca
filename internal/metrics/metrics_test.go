package metrics

import (
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/uevent"
	"github.com/heapd/heapd/protocol"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// noCMA is a MemInfo for a kernel without CMA, so that tests do not
// depend on the machine's /proc/meminfo.
func noCMA() (dmaheap.CMAStats, error) { return dmaheap.CMAStats{}, nil }

func newTest(t testing.TB) *Metrics {
	t.Helper()
	return New(&Config{Version: "heapd test", MemInfo: noCMA, NoRuntime: true})
}

// golden compares what m's registry gathers for names with
// testdata/<file>, or rewrites the file under -update.
func golden(t *testing.T, m *Metrics, file string, names ...string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		got := textFamilies(t, m, names...)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	defer want.Close()
	if err := testutil.GatherAndCompare(m.Registry(), want, names...); err != nil {
		t.Errorf("%s: %v\n(run go test ./internal/metrics -update if the change is intended)", path, err)
	}
}

// The daemon's own events: allocations, denials, live buffers, pool and
// clients.
func TestGoldenEvents(t *testing.T) {
	m := newTest(t)
	m.AllocResult("system", 0, 80*time.Microsecond)
	m.AllocResult("system", 0, 3*time.Millisecond)
	m.AllocResult("scanout", 0, 40*time.Millisecond)
	m.AllocResult("scanout", protocol.CodeQuota, time.Millisecond)
	m.AllocResult("contiguous", protocol.CodeNoMemory, 2*time.Second)
	m.AllocResult("", protocol.CodeUnknownHeap, 0)
	m.AllocResult("system", protocol.Code(999), 0)
	m.Denied("quota_bytes")
	m.Denied("heap_not_granted")
	m.Denied("heap_not_granted")
	m.Denied("")
	m.LiveBuffers("system", 1000, 8<<20, 2)
	m.LiveBuffers("scanout", 1000, 4<<20, 1)
	m.LiveBuffers("system", 0, 4096, 1)
	m.LiveBuffers("system", 1001, 4096, 1)
	m.LiveBuffers("system", 1001, -4096, -1) // gone: no series left
	m.PoolHit("system")
	m.PoolHit("system")
	m.PoolMiss("system")
	m.PoolMiss("scanout")
	m.ClientConnected(1)
	m.ClientConnected(1)
	m.ClientConnected(1)
	m.ClientConnected(-1)
	golden(t, m, "events.prom",
		"heapd_allocations_total", "heapd_allocation_duration_seconds",
		"heapd_denials_total", "heapd_live_bytes", "heapd_live_buffers",
		"heapd_pool_hits_total", "heapd_pool_misses_total",
		"heapd_clients", "heapd_connections_total")
}

// Scrape-time sources: CMA, heaps, uevents, quota.
func TestGoldenSources(t *testing.T) {
	m := New(&Config{NoRuntime: true, MemInfo: func() (dmaheap.CMAStats, error) {
		return dmaheap.CMAStats{Present: true, Total: 256 << 20, Free: 200 << 20}, nil
	}})
	m.SetHeapSource(func() []heap.Info {
		return []heap.Info{
			{Name: "system", Backend: heap.BackendKernel, Target: "/dev/dma_heap/system", KernelName: "system", Properties: heap.Properties{DeviceImportable: true}},
			{Name: "contiguous", Backend: heap.BackendKernel, Target: "/dev/dma_heap/linux,cma", KernelName: "linux,cma", Properties: heap.Properties{Contiguous: true, DeviceImportable: true}},
			{Name: "scanout/platform-gpu", Backend: heap.BackendKernel, Target: "/dev/dma_heap/linux,cma", Device: "platform-gpu", Properties: heap.Properties{Contiguous: true, DeviceImportable: true}},
		}
	})
	m.SetUeventSource(func() uevent.Stats {
		return uevent.Stats{Received: 40, Delivered: 12, Filtered: 25, NotKernel: 2, Malformed: 1, Overflows: 1}
	})
	m.SetQuotaSource(func() []QuotaUse {
		return []QuotaUse{
			{UID: 1000, Bytes: 12 << 20, Buffers: 3, LimitBytes: 256 << 20, LimitBuffers: 64},
			{UID: 1000, Class: "contiguous", Bytes: 4 << 20, Buffers: 1, LimitBytes: 64 << 20, LimitBuffers: protocol.Unlimited},
			{UID: 0, Bytes: 4096, Buffers: 1, LimitBytes: protocol.Unlimited, LimitBuffers: protocol.Unlimited},
			{UID: 1001, Class: "contiguous", LimitBytes: 0, LimitBuffers: 0}, // a class granted nothing
		}
	})
	golden(t, m, "sources.prom",
		"heapd_cma_total_bytes", "heapd_cma_free_bytes", "heapd_meminfo_up",
		"heapd_heap_info",
		"heapd_uevents_received_total", "heapd_uevents_delivered_total",
		"heapd_uevents_dropped_total", "heapd_uevent_overflows_total",
		"heapd_quota_used_bytes", "heapd_quota_used_buffers",
		"heapd_quota_limit_bytes", "heapd_quota_limit_buffers")
}

func TestBuildInfo(t *testing.T) {
	m := newTest(t)
	want := fmt.Sprintf(`
# HELP heapd_build_info Always 1; the labels say which heapd this is.
# TYPE heapd_build_info gauge
heapd_build_info{goversion=%q,version="heapd test"} 1
`, runtime.Version())
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "heapd_build_info"); err != nil {
		t.Error(err)
	}
}

// A removed source, a kernel without CMA and a failing /proc/meminfo
// export nothing but heapd_meminfo_up.
func TestSourcesAbsent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		memInfo func() (dmaheap.CMAStats, error)
		up      int
	}{
		{"no CMA", noCMA, 1},
		{"meminfo unreadable", func() (dmaheap.CMAStats, error) { return dmaheap.CMAStats{}, errors.New("permission denied") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(&Config{NoRuntime: true, MemInfo: tc.memInfo})
			m.SetHeapSource(func() []heap.Info { return []heap.Info{{Name: "system"}} })
			m.SetHeapSource(nil)
			want := fmt.Sprintf(`
# HELP heapd_meminfo_up 1 when the last scrape read /proc/meminfo, 0 when it could not.
# TYPE heapd_meminfo_up gauge
heapd_meminfo_up %d
`, tc.up)
			if err := testutil.CollectAndCompare(m.sources, strings.NewReader(want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// New's default MemInfo reads this machine's /proc/meminfo.
func TestDefaultMemInfo(t *testing.T) {
	m := New(nil)
	if got := value(t, m, "heapd_meminfo_up"); got != 1 {
		t.Errorf("heapd_meminfo_up = %v on this machine", got)
	}
	// The runtime collectors are there by default.
	if n, err := testutil.GatherAndCount(m.Registry(), "process_open_fds", "go_goroutines"); err != nil || n != 2 {
		t.Errorf("runtime collectors: %d series, %v", n, err)
	}
}

// No name breaks Prometheus' conventions (promlint).
func TestLint(t *testing.T) {
	m := New(&Config{MemInfo: func() (dmaheap.CMAStats, error) { return dmaheap.CMAStats{Present: true, Total: 1, Free: 1}, nil }})
	m.AllocResult("system", 0, time.Millisecond)
	m.Denied("quota_bytes")
	m.LiveBuffers("system", 1, 1, 1)
	m.PoolHit("system")
	m.PoolMiss("system")
	m.ClientConnected(1)
	m.SetHeapSource(func() []heap.Info { return []heap.Info{{Name: "system"}} })
	m.SetUeventSource(func() uevent.Stats { return uevent.Stats{} })
	m.SetQuotaSource(func() []QuotaUse { return []QuotaUse{{UID: 1, LimitBytes: 1, LimitBuffers: 1}} })
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, Namespace+"_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// A client that names many heaps cannot make many series.
func TestLabelBounds(t *testing.T) {
	m := newTest(t)
	for i := range 3 * MaxHeapLabels {
		name := fmt.Sprintf("heap%d", i)
		m.AllocResult(name, protocol.CodeUnknownHeap, 0)
		m.LiveBuffers(name, 7, 1, 1)
	}
	for i := range 2 * MaxReasonLabels {
		m.Denied(fmt.Sprintf("reason%d", i))
	}
	if got := testutil.CollectAndCount(m.allocs); got != MaxHeapLabels+1 {
		t.Errorf("heapd_allocations_total has %d series, want %d", got, MaxHeapLabels+1)
	}
	if got := testutil.ToFloat64(m.allocs.WithLabelValues(OtherLabel, "unknown_heap")); got != 2*MaxHeapLabels {
		t.Errorf("other heaps counted %v, want %d", got, 2*MaxHeapLabels)
	}
	if got := testutil.CollectAndCount(m.live, "heapd_live_buffers"); got != MaxHeapLabels+1 {
		t.Errorf("heapd_live_buffers has %d series, want %d", got, MaxHeapLabels+1)
	}
	if got := testutil.CollectAndCount(m.denials); got != MaxReasonLabels+1 {
		t.Errorf("heapd_denials_total has %d series, want %d", got, MaxReasonLabels+1)
	}
	if len(m.perHeap) > MaxHeapLabels+2 {
		t.Errorf("perHeap grew to %d entries", len(m.perHeap))
	}
}

// Every method of a nil *Metrics is a no-op, so the daemon needs no
// checks when metrics are off.
func TestNil(t *testing.T) {
	var m *Metrics
	m.AllocResult("system", 0, time.Millisecond)
	m.Denied("x")
	m.LiveBuffers("system", 0, 1, 1)
	m.PoolHit("system")
	m.PoolMiss("system")
	m.ClientConnected(1)
	m.SetQuotaSource(nil)
	m.SetHeapSource(nil)
	m.SetUeventSource(nil)
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	if m.Handler() == nil {
		t.Error("nil Metrics has no handler")
	}
}

// The hot path allocates nothing once a heap's series exist (issue 11:
// the allocate handler allocates nothing per request beyond the reply).
func TestHotPathAllocs(t *testing.T) {
	m := newTest(t)
	m.AllocResult("system", 0, time.Millisecond)
	m.LiveBuffers("system", 1000, 1, 1)
	if n := testing.AllocsPerRun(100, func() {
		m.AllocResult("system", 0, time.Millisecond)
		m.AllocResult("system", protocol.CodeQuota, time.Millisecond)
		m.LiveBuffers("system", 1000, 4096, 1)
		m.PoolHit("system")
		m.ClientConnected(1)
	}); n != 0 {
		t.Errorf("%v allocations per call", n)
	}
}

// Concurrent updates and scrapes (run with -race).
func TestConcurrent(t *testing.T) {
	m := newTest(t)
	m.SetQuotaSource(func() []QuotaUse { return []QuotaUse{{UID: 1}} })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("heap%d", g%3)
			for i := range 500 {
				m.AllocResult(name, protocol.Code(i%3), time.Microsecond)
				m.LiveBuffers(name, uint32(g), 4096, 1)
				m.LiveBuffers(name, uint32(g), -4096, -1)
				m.ClientConnected(1)
				m.ClientConnected(-1)
			}
		}()
	}
	for range 20 {
		if _, err := m.Registry().Gather(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if n := testutil.CollectAndCount(m.live); n != 0 {
		t.Errorf("%d live series after every buffer was released", n)
	}
	if v := testutil.ToFloat64(m.clients); v != 0 {
		t.Errorf("heapd_clients = %v", v)
	}
	if v := testutil.ToFloat64(m.conns); v != 8*500 {
		t.Errorf("heapd_connections_total = %v", v)
	}
}

func BenchmarkAllocResult(b *testing.B) {
	m := newTest(b)
	b.ReportAllocs()
	for b.Loop() {
		m.AllocResult("system", 0, 100*time.Microsecond)
		m.LiveBuffers("system", 1000, 1<<20, 1)
	}
}

// value is the single sample of family name.
func value(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s has %d samples", name, len(mf.GetMetric()))
		}
		s := mf.GetMetric()[0]
		switch {
		case s.GetGauge() != nil:
			return s.GetGauge().GetValue()
		case s.GetCounter() != nil:
			return s.GetCounter().GetValue()
		}
		t.Fatalf("%s is neither gauge nor counter", name)
	}
	t.Fatalf("no %s", name)
	return 0
}

// textFamilies scrapes m through its handler and keeps the families
// named (all when none is), as the text format writes them.
func textFamilies(t *testing.T, m *Metrics, names ...string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", Path, nil)
	req.Header.Set("Accept", "text/plain")
	m.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	var b strings.Builder
	on := false
	for line := range strings.Lines(rec.Body.String()) {
		if name, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ = strings.Cut(name, " ")
			on = len(names) == 0 || keep[name]
		}
		if on {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestReason(t *testing.T) {
	for code, want := range map[protocol.Code]string{
		0:                        "ok",
		protocol.CodeDenied:      "denied",
		protocol.CodeQuota:       "quota",
		protocol.CodeRateLimited: "rate_limited",
		protocol.CodeNoHeap:      "no_heap",
		protocol.Code(1 << 20):   "other",
	} {
		if got := Reason(code); got != want {
			t.Errorf("Reason(%d) = %q, want %q", code, got, want)
		}
	}
	if n := testing.AllocsPerRun(10, func() { _ = Reason(protocol.CodeQuota) }); n != 0 {
		t.Errorf("Reason allocates %v times", n)
	}
}
