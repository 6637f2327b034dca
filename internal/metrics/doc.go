// Package metrics is heapd's Prometheus instrumentation: a Metrics value
// with its own registry (never the global one), methods the daemon calls
// as things happen, collectors that read the system at scrape time, and an
// HTTP handler with a listener helper for TCP or a Unix socket.
//
// The daemon holds one *Metrics, or nil when metrics are off (the
// default): every method of a nil *Metrics does nothing, so call sites
// need no checks. The hot-path methods (AllocResult, LiveBuffers, PoolHit,
// PoolMiss, ClientConnected) take no lock that a scrape holds for long and
// do not allocate once a heap's series exist.
//
// What is counted where:
//
//   - as it happens, from the daemon: allocations by heap and result,
//     allocation latency (successful allocations only), denials by
//     reason, live bytes and buffers by heap and uid, pool hits and
//     misses, connected clients;
//   - at scrape time, from sources the daemon hands over: quota use per
//     uid (SetQuotaSource, the ledger), the published heaps
//     (SetHeapSource, the registry), the uevent listener's counters
//     (SetUeventSource: received, delivered, dropped by reason,
//     overflows); and CmaTotal/CmaFree from /proc/meminfo;
//   - heapd_build_info, and the Go runtime and process collectors
//     (process_open_fds matters for a daemon that brokers fds).
//
// Label values that come from outside are bounded: at most MaxHeapLabels
// heap names and MaxReasonLabels denial reasons get series of their own,
// the rest are counted under "other"; live series of a uid disappear when
// it holds nothing.
//
// # Privilege
//
// None. Reading /proc/meminfo and /proc/self is open to every user.
// Listening on a TCP port below 1024 needs CAP_NET_BIND_SERVICE; the
// documented ports are above it. The endpoint has no authentication: bind
// it to loopback or to a Unix socket (see docs/operating.md).
package metrics
