package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/uevent"
	"github.com/heapd/heapd/protocol"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// liveCollector exports what each uid holds on each heap. It keeps plain
// numbers rather than a GaugeVec so that a pair that returns to zero can
// be dropped in the same step that zeroes it.
type liveCollector struct {
	bytes, buffers *prometheus.Desc

	mu   sync.Mutex
	live map[liveKey]*liveVal
}

type liveKey struct {
	heap string
	uid  uint32
}

type liveVal struct{ bytes, buffers int64 }

func newLiveCollector() *liveCollector {
	return &liveCollector{
		bytes:   desc("live_bytes", "Bytes of buffers handed out and not yet freed, by heap and owner uid (sum by heap or by uid).", "heap", "uid"),
		buffers: desc("live_buffers", "Buffers handed out and not yet freed, by heap and owner uid.", "heap", "uid"),
		live:    map[liveKey]*liveVal{},
	}
}

func (c *liveCollector) add(heap string, uid uint32, dBytes, dBuffers int64) {
	k := liveKey{heap, uid}
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.live[k]
	if v == nil {
		v = &liveVal{}
		c.live[k] = v
	}
	v.bytes += dBytes
	v.buffers += dBuffers
	if v.bytes == 0 && v.buffers == 0 {
		delete(c.live, k)
	}
}

// Describe implements prometheus.Collector.
func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.buffers
}

// Collect implements prometheus.Collector.
func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		k liveKey
		v liveVal
	}
	c.mu.Lock()
	rows := make([]row, 0, len(c.live))
	for k, v := range c.live {
		rows = append(rows, row{k, *v})
	}
	c.mu.Unlock()
	for _, r := range rows {
		uid := strconv.FormatUint(uint64(r.k.uid), 10)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(r.v.bytes), r.k.heap, uid)
		ch <- prometheus.MustNewConstMetric(c.buffers, prometheus.GaugeValue, float64(r.v.buffers), r.k.heap, uid)
	}
}

// sourceCollector reads the system and the daemon's parts at scrape time:
// CMA counters, published heaps, uevent counters, quota use.
type sourceCollector struct {
	memInfo func() (dmaheap.CMAStats, error)

	cmaTotal, cmaFree, memInfoErr *prometheus.Desc
	heapInfo                      *prometheus.Desc
	ueReceived, ueDelivered       *prometheus.Desc
	ueDropped, ueOverflows        *prometheus.Desc
	quotaBytes, quotaBuffers      *prometheus.Desc
	limitBytes, limitBuffers      *prometheus.Desc

	mu      sync.Mutex
	quota   func() []QuotaUse
	heaps   func() []heap.Info
	uevents func() uevent.Stats
}

func newSourceCollector(memInfo func() (dmaheap.CMAStats, error)) *sourceCollector {
	return &sourceCollector{
		memInfo:      memInfo,
		cmaTotal:     desc("cma_total_bytes", "CmaTotal from /proc/meminfo: every CMA area together. Absent on a kernel without CMA."),
		cmaFree:      desc("cma_free_bytes", "CmaFree from /proc/meminfo. Free is not contiguous: an allocation below it can still fail when the area is fragmented."),
		memInfoErr:   desc("meminfo_up", "1 when the last scrape read /proc/meminfo, 0 when it could not."),
		heapInfo:     desc("heap_info", "Always 1 for each published heap; the labels describe it.", "heap", "backend", "target", "device", "contiguous", "device_importable"),
		ueReceived:   desc("uevents_received_total", "Netlink messages and inotify records the uevent listener read."),
		ueDelivered:  desc("uevents_delivered_total", "Device events handed to heapd (overflow markers included)."),
		ueDropped:    desc("uevents_dropped_total", "Messages the uevent listener dropped, by reason: filtered (not a device heapd follows), not_kernel (not sent by the kernel: forged, or udev's), malformed.", "reason"),
		ueOverflows:  desc("uevent_overflows_total", "Times the kernel dropped uevents because heapd's receive buffer was full; each one makes heapd rescan."),
		quotaBytes:   desc("quota_used_bytes", "Bytes charged to a uid against a quota; class is a heap class, or total.", "uid", "class"),
		quotaBuffers: desc("quota_used_buffers", "Buffers charged to a uid against a quota; class is a heap class, or total.", "uid", "class"),
		limitBytes:   desc("quota_limit_bytes", "A uid's byte quota; absent when unlimited.", "uid", "class"),
		limitBuffers: desc("quota_limit_buffers", "A uid's buffer quota; absent when unlimited.", "uid", "class"),
	}
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.cmaTotal, c.cmaFree, c.memInfoErr, c.heapInfo,
		c.ueReceived, c.ueDelivered, c.ueDropped, c.ueOverflows,
		c.quotaBytes, c.quotaBuffers, c.limitBytes, c.limitBuffers,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	quota, heaps, uevents := c.quota, c.heaps, c.uevents
	c.mu.Unlock()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	if st, err := c.memInfo(); err != nil {
		gauge(c.memInfoErr, 0)
	} else {
		gauge(c.memInfoErr, 1)
		if st.Present {
			gauge(c.cmaTotal, float64(st.Total))
			gauge(c.cmaFree, float64(st.Free))
		}
	}

	if heaps != nil {
		for _, h := range heaps() {
			gauge(c.heapInfo, 1, h.Name, string(h.Backend), h.Target, h.Device,
				strconv.FormatBool(h.Contiguous), strconv.FormatBool(h.DeviceImportable))
		}
	}

	if uevents != nil {
		st := uevents()
		counter(c.ueReceived, st.Received)
		counter(c.ueDelivered, st.Delivered)
		counter(c.ueDropped, st.Filtered, "filtered")
		counter(c.ueDropped, st.NotKernel, "not_kernel")
		counter(c.ueDropped, st.Malformed, "malformed")
		counter(c.ueOverflows, st.Overflows)
	}

	if quota != nil {
		uses := quota()
		// Two entries for one (uid, class) would make the registry fail the
		// scrape: keep the last.
		type key struct {
			uid   uint32
			class string
		}
		last := map[key]QuotaUse{}
		for _, u := range uses {
			if u.Class == "" {
				u.Class = "total"
			}
			last[key{u.UID, u.Class}] = u
		}
		for _, u := range last {
			uid := strconv.FormatUint(uint64(u.UID), 10)
			gauge(c.quotaBytes, float64(u.Bytes), uid, u.Class)
			gauge(c.quotaBuffers, float64(u.Buffers), uid, u.Class)
			if limited(u.LimitBytes) {
				gauge(c.limitBytes, float64(u.LimitBytes), uid, u.Class)
			}
			if limited(u.LimitBuffers) {
				gauge(c.limitBuffers, float64(u.LimitBuffers), uid, u.Class)
			}
		}
	}
}

func limited(v uint64) bool { return v != protocol.Unlimited }
