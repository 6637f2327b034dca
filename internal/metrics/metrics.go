package metrics

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/uevent"
	"github.com/heapd/heapd/protocol"
)

// Namespace prefixes every heapd metric name.
const Namespace = "heapd"

// Label bounds: label values beyond these many distinct ones are counted
// under OtherLabel, so a client that names a million heaps cannot make
// heapd keep a million series.
const (
	// MaxHeapLabels bounds distinct heap label values.
	MaxHeapLabels = 64
	// MaxReasonLabels bounds distinct denial reasons.
	MaxReasonLabels = 32
	// OtherLabel stands for every value past a bound.
	OtherLabel = "other"
	// NoHeapLabel is the heap label of a request that failed before a heap
	// was chosen (an unknown heap name, a device set no heap satisfied).
	NoHeapLabel = "none"
)

// LatencyBuckets are the allocation latency histogram's buckets, in
// seconds: from the IPC floor (tens of µs) to a large CMA allocation that
// has to migrate pages (a second or more).
var LatencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5,
}

// Config configures New. A nil *Config means the defaults.
type Config struct {
	// Version is reported by heapd_build_info ("heapd v0.1.0"); default
	// "heapd".
	Version string
	// MemInfo reads the kernel's CMA counters at scrape time; nil means
	// dmaheap.MemInfo (/proc/meminfo).
	MemInfo func() (dmaheap.CMAStats, error)
	// NoRuntime leaves out the Go runtime (go_*) and process (process_*)
	// collectors (tests).
	NoRuntime bool
}

// QuotaUse is what one uid holds against one quota, as a ledger reports
// it for heapd_quota_*.
type QuotaUse struct {
	UID uint32
	// Class is the heap class the quota bounds ("contiguous", "system"...),
	// or "" for the uid's total.
	Class string
	// Bytes and Buffers are charged now.
	Bytes, Buffers uint64
	// LimitBytes and LimitBuffers are the bounds; protocol.Unlimited
	// means none, and then no limit series is exported.
	LimitBytes, LimitBuffers uint64
}

// Metrics is heapd's instrumentation. Create it with New. It is safe for
// concurrent use, and every method of a nil *Metrics does nothing.
type Metrics struct {
	reg *prometheus.Registry

	allocs   *prometheus.CounterVec   // heap, result
	latency  *prometheus.HistogramVec // heap
	denials  *prometheus.CounterVec   // reason
	poolHits *prometheus.CounterVec   // heap
	poolMiss *prometheus.CounterVec   // heap
	clients  prometheus.Gauge
	conns    prometheus.Counter

	heapLabels   *labelSet
	reasonLabels *labelSet

	// mu guards perHeap: the children of the vectors above for one heap
	// label, looked up once so the hot path neither hashes labels nor
	// allocates.
	mu      sync.RWMutex
	perHeap map[string]*heapSeries

	live    *liveCollector
	sources *sourceCollector
}

// heapSeries are the per-heap children of the vectors, each made on
// first use (so a heap that never sees a pool has no pool series) and then
// read without a lock. WithLabelValues returns the same child every time,
// so two goroutines racing to make one store the same value.
type heapSeries struct {
	label    string
	results  [resultCount]atomic.Pointer[prometheus.Counter]
	latency  atomic.Pointer[prometheus.Observer]
	poolHit  atomic.Pointer[prometheus.Counter]
	poolMiss atomic.Pointer[prometheus.Counter]
}

func (s *heapSeries) result(m *Metrics, i int) prometheus.Counter {
	if c := s.results[i].Load(); c != nil {
		return *c
	}
	c := m.allocs.WithLabelValues(s.label, resultNames[i])
	s.results[i].Store(&c)
	return c
}

func (s *heapSeries) observer(m *Metrics) prometheus.Observer {
	if o := s.latency.Load(); o != nil {
		return *o
	}
	o := m.latency.WithLabelValues(s.label)
	s.latency.Store(&o)
	return o
}

func (s *heapSeries) pool(m *Metrics, hit bool) prometheus.Counter {
	p, vec := &s.poolMiss, m.poolMiss
	if hit {
		p, vec = &s.poolHit, m.poolHits
	}
	if c := p.Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(s.label)
	p.Store(&c)
	return c
}

// results: index 0 is success, 1..maxCode the wire codes package
// protocol names (new codes are picked up without a change here),
// resultCount-1 any other code.
const (
	maxCode     = 63
	resultCount = maxCode + 2
)

// resultNames are the result label values: "ok", then the wire code
// names in lower case ("denied", "no_memory"...; "" for numbers package
// protocol does not name), then "other".
var resultNames = func() [resultCount]string {
	var n [resultCount]string
	n[0] = "ok"
	for c := 1; c <= maxCode; c++ {
		if name := protocol.Code(c).String(); !strings.HasPrefix(name, "CODE_") {
			n[c] = strings.ToLower(name)
		}
	}
	n[resultCount-1] = OtherLabel
	return n
}()

// Reason returns the label heapd uses for code: "ok" for 0, else the
// wire code's name in lower case ("denied", "quota", "rate_limited"...),
// "other" for a code this package does not know. It does not allocate, so
// the daemon can pass Reason(code) to Denied on every refusal.
func Reason(code protocol.Code) string { return resultNames[resultIndex(code)] }

func resultIndex(code protocol.Code) int {
	if code <= maxCode && resultNames[code] != "" {
		return int(code)
	}
	return resultCount - 1
}

// New returns Metrics with a fresh registry holding every heapd metric.
func New(cfg *Config) *Metrics {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Version == "" {
		c.Version = "heapd"
	}
	if c.MemInfo == nil {
		c.MemInfo = dmaheap.MemInfo
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		allocs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "allocations_total",
			Help: "Allocate requests answered, by heap and result (ok, or the wire error code in lower case: denied, quota, no_memory...). A batch counts once.",
		}, []string{"heap", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "allocation_duration_seconds",
			Help:    "Time from an Allocate request's arrival to its reply being ready, successful allocations only, by heap.",
			Buckets: LatencyBuckets,
		}, []string{"heap"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "denials_total",
			Help: "Allocations refused by policy or quota, by reason.",
		}, []string{"reason"}),
		poolHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "pool_hits_total",
			Help: "Allocations served from the prefetch pool, by heap.",
		}, []string{"heap"}),
		poolMiss: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "pool_misses_total",
			Help: "Allocations the prefetch pool could not serve (allocated on the request path), by heap.",
		}, []string{"heap"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "clients",
			Help: "Client connections open now.",
		}),
		conns: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_total",
			Help: "Client connections accepted since start.",
		}),
		heapLabels:   newLabelSet(MaxHeapLabels),
		reasonLabels: newLabelSet(MaxReasonLabels),
		perHeap:      map[string]*heapSeries{},
		live:         newLiveCollector(),
		sources:      newSourceCollector(c.MemInfo),
	}
	m.reg.MustRegister(m.allocs, m.latency, m.denials, m.poolHits, m.poolMiss, m.clients, m.conns, m.live, m.sources)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which heapd this is.",
		ConstLabels: prometheus.Labels{"version": c.Version, "goversion": runtime.Version()},
	}, func() float64 { return 1 }))
	if !c.NoRuntime {
		m.reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	return m
}

// Registry returns the registry behind m, for tests and for embedders
// that serve it themselves. nil for a nil *Metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler returns the HTTP handler that serves m in the Prometheus text
// (or OpenMetrics, when asked) format. A collector that fails is left out
// of the answer rather than failing the whole scrape.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// series returns the per-heap children for heap, creating them on first
// use. heap "" becomes NoHeapLabel; names past MaxHeapLabels share
// OtherLabel.
func (m *Metrics) series(name string) *heapSeries {
	m.mu.RLock()
	s := m.perHeap[name]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	label := m.heapLabel(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.perHeap[name]; s != nil {
		return s
	}
	// Names counted as "other" share one entry but are not remembered one
	// by one, so that the map stays bounded too.
	if s = m.perHeap[label]; s == nil {
		s = &heapSeries{label: label}
		m.perHeap[label] = s
	}
	if label == name {
		m.perHeap[name] = s
	}
	return s
}

func (m *Metrics) heapLabel(name string) string {
	if name == "" {
		return NoHeapLabel
	}
	return m.heapLabels.get(name)
}

// AllocResult records one answered Allocate request: heap is the heap
// that served it (for a device set, the one the resolver chose), or ""
// when the request failed before a heap was chosen; code is 0 for
// success, else the wire code sent to the client; latency is from the
// request's arrival to its reply, observed for successes only. Pass heap
// names from the registry, not the client's raw request: a name past
// MaxHeapLabels is counted as "other".
func (m *Metrics) AllocResult(heap string, code protocol.Code, latency time.Duration) {
	if m == nil {
		return
	}
	s := m.series(heap)
	s.result(m, resultIndex(code)).Inc()
	if code == 0 {
		s.observer(m).Observe(latency.Seconds())
	}
}

// Denied records an allocation refused by policy or quota. reason is a
// short stable token: the policy engine's ("no_rule", "heap_not_granted",
// "quota_bytes", "quota_buffers", "max_alloc", "rate_limited"), or the
// wire code's name in lower case where nothing finer is known. A reason
// past MaxReasonLabels is counted as "other".
func (m *Metrics) Denied(reason string) {
	if m == nil {
		return
	}
	if reason == "" {
		reason = "unspecified"
	}
	m.denials.WithLabelValues(m.reasonLabels.get(reason)).Inc()
}

// LiveBuffers adds deltaBytes and deltaBuffers to what uid holds on heap:
// positive when the ledger charges buffers, negative when it releases
// them. A (heap, uid) pair whose bytes and buffers both return to zero
// stops being exported.
func (m *Metrics) LiveBuffers(heap string, uid uint32, deltaBytes, deltaBuffers int64) {
	if m == nil {
		return
	}
	m.live.add(m.heapLabel(heap), uid, deltaBytes, deltaBuffers)
}

// PoolHit records an allocation served from heap's prefetch pool.
func (m *Metrics) PoolHit(heap string) {
	if m == nil {
		return
	}
	m.series(heap).pool(m, true).Inc()
}

// PoolMiss records an allocation heap's prefetch pool could not serve.
func (m *Metrics) PoolMiss(heap string) {
	if m == nil {
		return
	}
	m.series(heap).pool(m, false).Inc()
}

// ClientConnected adds delta to the open connections: +1 when one is
// admitted, -1 when it ends. Positive deltas also count in
// heapd_connections_total.
func (m *Metrics) ClientConnected(delta int) {
	if m == nil {
		return
	}
	m.clients.Add(float64(delta))
	if delta > 0 {
		m.conns.Add(float64(delta))
	}
}

// SetQuotaSource makes each scrape call f for every uid's quota use
// (heapd_quota_*). f must be safe for concurrent use and quick: it runs on
// the scrape path. nil removes the source.
func (m *Metrics) SetQuotaSource(f func() []QuotaUse) {
	if m == nil {
		return
	}
	m.sources.mu.Lock()
	m.sources.quota = f
	m.sources.mu.Unlock()
}

// SetHeapSource makes each scrape call f for the published heaps
// (heapd_heap_info); (*heap.Registry).List fits. nil removes the source.
func (m *Metrics) SetHeapSource(f func() []heap.Info) {
	if m == nil {
		return
	}
	m.sources.mu.Lock()
	m.sources.heaps = f
	m.sources.mu.Unlock()
}

// SetUeventSource makes each scrape call f for the uevent listener's
// counters (heapd_uevents_*); (*uevent.Listener).Stats fits. nil removes
// the source.
func (m *Metrics) SetUeventSource(f func() uevent.Stats) {
	if m == nil {
		return
	}
	m.sources.mu.Lock()
	m.sources.uevents = f
	m.sources.mu.Unlock()
}

// labelSet admits up to max distinct label values; later ones map to
// OtherLabel.
type labelSet struct {
	mu   sync.Mutex
	max  int
	seen map[string]struct{}
}

func newLabelSet(max int) *labelSet {
	return &labelSet{max: max, seen: map[string]struct{}{}}
}

func (l *labelSet) get(v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[v]; ok {
		return v
	}
	if len(l.seen) >= l.max {
		return OtherLabel
	}
	l.seen[v] = struct{}{}
	return v
}
