package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

// Ledger charges allocations to their owners. It is where quotas and the
// lifetime-following ledger (package ledger) plug in. The daemon calls
// Reserve before allocating (so check-and-charge is one atomic step and
// parallel requests cannot overshoot), then exactly one of Commit (the
// buffers were made and are about to be sent) or Cancel (they were not).
//
// Implementations must be safe for concurrent use.
type Ledger interface {
	// Reserve charges req to owner's uid within lim, or refuses with a
	// *protocol.Error (CodeQuota) that says which limit of which rule and
	// by how much.
	Reserve(owner *Identity, req AllocRequest, lim Limits) (Reservation, error)
	// Usage reports what is charged to owner's uid, with lim (the limits
	// of the rule that applies to owner) filled in.
	Usage(owner *Identity, lim Limits) LedgerUsage
}

// Reservation is one charge in progress.
type Reservation interface {
	// Commit records the buffers about to be handed out, with their
	// daemon ids. The buffers stay owned by the daemon, which closes them
	// once sent: a ledger that follows their lifetime keeps references of
	// its own. Commit may replace elements of bufs with equivalent buffers
	// for the same memory that it can follow better (closing the ones it
	// replaces); the daemon sends and closes what bufs holds afterwards.
	// On error nothing stays charged and bufs (as left) are still the
	// daemon's to close.
	Commit(bufs []*dmabuf.Buffer, ids []uint64) error
	// Cancel releases the charge (the allocation failed).
	Cancel()
}

// HandOff is implemented by Reservations that want to know when the
// daemon no longer holds the committed buffers: it calls Handed once,
// after closing its own fds of them (sent to the client or not). Until
// then the daemon's fds are references the ledger must not count as the
// client's.
type HandOff interface {
	Handed()
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

// LedgerEntry is one live buffer as a Lister reports it.
type LedgerEntry struct {
	ID      uint64    `json:"id"`
	UID     uint32    `json:"uid"`
	PID     int32     `json:"pid"`
	Comm    string    `json:"comm"`
	Heap    string    `json:"heap"`
	Class   string    `json:"class"`
	Size    int64     `json:"size"`
	Name    string    `json:"name"`
	Inode   uint64    `json:"inode"`
	Created time.Time `json:"created"`
	// Emulated marks a sealed memfd of the emulated heap.
	Emulated bool `json:"emulated"`
	// References is the kernel's count of references to the buffer's
	// file other than the ledger's own (fds, mappings, fds in flight,
	// device imports); -1 where the kernel does not tell (emulated).
	References int64 `json:"references"`
	// Holders are the processes that hold an fd or a mapping of it.
	Holders []Holder `json:"holders"`
}

// Holder is one process holding a buffer.
type Holder struct {
	PID  int32  `json:"pid"`
	UID  uint32 `json:"uid"`
	Comm string `json:"comm"`
	// FDs and Maps count its fds and mappings of the buffer.
	FDs  int `json:"fds"`
	Maps int `json:"maps"`
}

// Lister is implemented by Ledgers that can list their live buffers (the
// admin socket's "ledger" request, heapctl ledger).
type Lister interface {
	List(ctx context.Context) ([]LedgerEntry, error)
}

// Tally is the Ledger package daemon uses when its Config names none: it
// sets no limits and does not follow buffers after hand-out, so it reports
// only the cumulative totals per uid and heap, and says so (Accounted is
// false). The zero value is ready to use.
type Tally struct {
	mu    sync.Mutex
	total map[uint32]map[string]*tallyEntry
}

type tallyEntry struct{ bytes, buffers uint64 }

// Reserve implements Ledger: it never refuses.
func (t *Tally) Reserve(owner *Identity, req AllocRequest, _ Limits) (Reservation, error) {
	return &tallyReservation{t: t, uid: owner.UID, heap: req.Heap.Name}, nil
}

// Usage implements Ledger.
func (t *Tally) Usage(owner *Identity, _ Limits) LedgerUsage {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := LedgerUsage{LimitBytes: protocol.Unlimited, LimitBuffers: protocol.Unlimited, MaxAlloc: protocol.Unlimited}
	for name, e := range t.total[owner.UID] {
		u.TotalBytes += e.bytes
		u.TotalBuffers += e.buffers
		u.Heaps = append(u.Heaps, protocol.HeapUsage{Heap: name, LimitBytes: protocol.Unlimited, LimitBuffers: protocol.Unlimited})
	}
	SortHeapUsage(u.Heaps)
	return u
}

type tallyReservation struct {
	t    *Tally
	uid  uint32
	heap string
}

func (r *tallyReservation) Commit(bufs []*dmabuf.Buffer, _ []uint64) error {
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
	return nil
}

func (r *tallyReservation) Cancel() {}

// SortHeapUsage sorts h by heap name.
func SortHeapUsage(h []protocol.HeapUsage) {
	for i := 1; i < len(h); i++ {
		for j := i; j > 0 && h[j].Heap < h[j-1].Heap; j-- {
			h[j], h[j-1] = h[j-1], h[j]
		}
	}
}
