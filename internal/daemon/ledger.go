package daemon

import (
	"sync"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

// Ledger charges allocations to their owners. It is where quotas and the
// lifetime-following ledger plug in. The daemon calls Reserve before
// allocating (so check-and-charge is one atomic step and parallel requests
// cannot overshoot), then exactly one of Commit (the buffers were made and
// are about to be sent) or Cancel (they were not).
//
// Implementations must be safe for concurrent use.
type Ledger interface {
	// Reserve charges req to owner, or refuses with a *protocol.Error
	// (CodeQuota) that says which limit and by how much.
	Reserve(owner *Identity, req AllocRequest) (Reservation, error)
	// Usage reports what is charged to owner.
	Usage(owner *Identity) LedgerUsage
}

// Reservation is one charge in progress.
type Reservation interface {
	// Commit records the buffers handed out, with their daemon ids. The
	// buffers stay owned by the daemon, which closes them once sent: a
	// ledger that follows their lifetime keeps its own duplicates (Clone).
	Commit(bufs []*dmabuf.Buffer, ids []uint64)
	// Cancel releases the charge (the allocation failed).
	Cancel()
}

// LedgerUsage is what a Ledger reports for one owner.
type LedgerUsage struct {
	// Accounted reports that Bytes and Buffers follow buffers' real
	// lifetimes (what the owner holds now).
	Accounted bool
	// Bytes and Buffers are charged now; limits are protocol.Unlimited
	// when there are none.
	Bytes, Buffers                     uint64
	LimitBytes, LimitBuffers, MaxAlloc uint64
	// TotalBytes and TotalBuffers count everything handed out to the
	// owner's uid since the daemon started.
	TotalBytes, TotalBuffers uint64
	// Heaps breaks the usage down per heap.
	Heaps []protocol.HeapUsage
}

// Tally is the Ledger heapd uses until the lifetime-following ledger
// exists: it sets no limits and does not follow buffers after hand-out,
// so it reports only the cumulative totals per uid and heap, and says
// so (Accounted is false). The zero value is ready to use.
type Tally struct {
	mu    sync.Mutex
	total map[uint32]map[string]*tallyEntry
}

type tallyEntry struct{ bytes, buffers uint64 }

// Reserve implements Ledger: it never refuses.
func (t *Tally) Reserve(owner *Identity, req AllocRequest) (Reservation, error) {
	return &tallyReservation{t: t, uid: owner.UID, heap: req.Heap.Name}, nil
}

// Usage implements Ledger.
func (t *Tally) Usage(owner *Identity) LedgerUsage {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := LedgerUsage{LimitBytes: protocol.Unlimited, LimitBuffers: protocol.Unlimited, MaxAlloc: protocol.Unlimited}
	for name, e := range t.total[owner.UID] {
		u.TotalBytes += e.bytes
		u.TotalBuffers += e.buffers
		u.Heaps = append(u.Heaps, protocol.HeapUsage{Heap: name, LimitBytes: protocol.Unlimited, LimitBuffers: protocol.Unlimited})
	}
	sortHeapUsage(u.Heaps)
	return u
}

type tallyReservation struct {
	t    *Tally
	uid  uint32
	heap string
}

func (r *tallyReservation) Commit(bufs []*dmabuf.Buffer, _ []uint64) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if r.t.total == nil {
		r.t.total = map[uint32]map[string]*tallyEntry{}
	}
	m := r.t.total[r.uid]
	if m == nil {
		m = map[string]*tallyEntry{}
		r.t.total[r.uid] = m
	}
	e := m[r.heap]
	if e == nil {
		e = &tallyEntry{}
		m[r.heap] = e
	}
	for _, b := range bufs {
		e.bytes += uint64(b.Size())
		e.buffers++
	}
}

func (r *tallyReservation) Cancel() {}

func sortHeapUsage(h []protocol.HeapUsage) {
	for i := 1; i < len(h); i++ {
		for j := i; j > 0 && h[j].Heap < h[j-1].Heap; j-- {
			h[j], h[j-1] = h[j-1], h[j]
		}
	}
}
