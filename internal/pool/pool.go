package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/metrics"
)

// Source is what the pool wraps; *heap.Registry implements it, and so
// does *Pool, which is what heapd's server takes (daemon.Heaps).
type Source interface {
	List() []heap.Info
	Problems() []string
	Get(name string) (heap.Heap, error)
	// Allocate serves one buffer; the Allocation's Buffer is owned by the
	// caller.
	Allocate(ctx context.Context, req heap.Request) (*heap.Allocation, error)
}

// DefaultSizes are the size classes pooled when Config.Sizes is empty.
var DefaultSizes = []int64{4 << 10, 1 << 20, 8 << 20}

// Defaults for the zero fields of Config.
const (
	DefaultDepth      = 4
	DefaultCMAReserve = 64 << 20
	DefaultName       = "heapd-pool"
	// refillEvery is how often the refiller looks at pools that no
	// allocation woke it for (and at CmaFree).
	refillEvery = time.Second
)

// Config configures a Pool. Zero fields take the defaults shown.
type Config struct {
	// MaxBytes bounds the memory held in all pools together; it must be
	// positive (a pool of zero bytes is no pool: do not wrap the source).
	MaxBytes int64
	// Sizes are the size classes, in bytes; each is rounded up to whole
	// pages. A request is served from the pool only when its size, rounded
	// up to pages, equals a class, so a client is never handed (and
	// charged for) more memory than it asked for. Default DefaultSizes.
	Sizes []int64
	// Depth is the most buffers kept per (heap, size class) (DefaultDepth).
	Depth int
	// Heaps names the heaps to pool. Empty means every published heap
	// that is not contiguous and belongs to no display device. A
	// contiguous heap is pooled only when named here. Heaps of a display
	// device (scanout/...) are never pooled: their allocations are probed
	// against the device per request.
	Heaps []string
	// CMAReserve: a contiguous heap's pools are drained, and not
	// refilled, while its CmaFree is below this many bytes; the pool
	// itself never allocates a contiguous buffer that would take CmaFree
	// below it (DefaultCMAReserve).
	CMAReserve int64
	// Name is the debug name pooled buffers are allocated with; a kernel
	// DMA-BUF is renamed to the request's name when handed out, an
	// emulated (memfd) buffer keeps this name, since a memfd's name is
	// fixed at creation. Default DefaultName.
	Name string
	// Metrics receives PoolHit and PoolMiss; nil means none.
	Metrics *metrics.Metrics
	// Logger receives refill failures and drains; nil discards.
	Logger *slog.Logger
}

// Stats is a snapshot of a Pool's counters.
type Stats struct {
	// Bytes and Buffers are what the pools hold now (charged to heapd).
	Bytes   int64 `json:"bytes"`
	Buffers int   `json:"buffers"`
	// Hits and Misses count eligible requests served from a pool or not;
	// requests the pool does not cover at all (other sizes, device sets,
	// images, heaps not pooled) count as neither.
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
}

type key struct {
	heap string
	size int64
}

// Pool is a Source that serves eligible requests from prefetched buffers
// and everything else from the Source it wraps. Create it with New and
// Close it when done; it is safe for concurrent use.
type Pool struct {
	src  Source
	cfg  Config
	log  *slog.Logger
	page int64

	mu      sync.Mutex
	free    map[key][]*dmabuf.Buffer
	bytes   int64
	hits    uint64
	misses  uint64
	closed  bool
	drained map[string]bool // contiguous heaps below CMAReserve

	kick chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

// New starts a pool over src and its background refiller. The pool does
// not close src. It fails when cfg is nil, MaxBytes is not positive, or a
// size class is not positive.
func New(src Source, cfg *Config) (*Pool, error) {
	if src == nil {
		return nil, errors.New("pool: nil source")
	}
	if cfg == nil || cfg.MaxBytes <= 0 {
		return nil, errors.New("pool: Config.MaxBytes must be positive (leave the pool out to disable it)")
	}
	c := *cfg
	if c.Depth <= 0 {
		c.Depth = DefaultDepth
	}
	if c.CMAReserve <= 0 {
		c.CMAReserve = DefaultCMAReserve
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if err := dmabuf.ValidateName(c.Name); err != nil {
		return nil, fmt.Errorf("pool: Config.Name: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	page := int64(os.Getpagesize())
	sizes := c.Sizes
	if len(sizes) == 0 {
		sizes = DefaultSizes
	}
	c.Sizes = nil
	for _, s := range sizes {
		if s <= 0 {
			return nil, fmt.Errorf("pool: size class %d: must be positive", s)
		}
		s = (s + page - 1) / page * page
		if !slices.Contains(c.Sizes, s) {
			c.Sizes = append(c.Sizes, s)
		}
	}
	slices.Sort(c.Sizes)
	ctx, stop := context.WithCancel(context.Background())
	p := &Pool{
		src: src, cfg: c, log: c.Logger, page: page,
		free:    map[key][]*dmabuf.Buffer{},
		drained: map[string]bool{},
		kick:    make(chan struct{}, 1),
		stop:    stop,
		done:    make(chan struct{}),
	}
	go p.refiller(ctx)
	p.wake()
	return p, nil
}

// List returns the source's heaps.
func (p *Pool) List() []heap.Info { return p.src.List() }

// Problems returns the source's problems.
func (p *Pool) Problems() []string { return p.src.Problems() }

// Get returns the source's heap of that name.
func (p *Pool) Get(name string) (heap.Heap, error) { return p.src.Get(name) }

// Refresh re-discovers heaps when the source can (*heap.Registry), and
// drains every pool: a heap that changed or went away must not be served
// from buffers of its old incarnation. The refiller fills them again.
func (p *Pool) Refresh() error {
	var err error
	if r, ok := p.src.(interface{ Refresh() error }); ok {
		err = r.Refresh()
	}
	p.drain(func(key) bool { return true })
	p.wake()
	return err
}

// Allocate serves req from a pool when it is eligible (a pooled heap by
// name, a size equal to a size class, no devices, no image) and a buffer
// is ready; otherwise from the source. The Allocation's Buffer is owned by
// the caller; a pooled buffer handed out here is forgotten by the pool.
func (p *Pool) Allocate(ctx context.Context, req heap.Request) (*heap.Allocation, error) {
	k, ok := p.eligible(req)
	if !ok {
		return p.src.Allocate(ctx, req)
	}
	for {
		b := p.take(k)
		if b == nil {
			break
		}
		if req.Name != "" && !b.Emulated() {
			if err := b.SetName(req.Name); err != nil {
				// Cannot carry the client's name: not this buffer.
				p.log.Warn("pool: naming a pooled buffer failed; discarding it", "heap", k.heap, "size", k.size, "err", err)
				b.Close()
				continue
			}
		}
		p.mu.Lock()
		p.hits++
		p.mu.Unlock()
		p.cfg.Metrics.PoolHit(k.heap)
		p.wake()
		return &heap.Allocation{Buffer: b, Heap: k.heap}, nil
	}
	p.mu.Lock()
	p.misses++
	p.mu.Unlock()
	p.cfg.Metrics.PoolMiss(k.heap)
	p.wake()
	return p.src.Allocate(ctx, req)
}

// eligible returns the pool key for req, if the pool covers it.
func (p *Pool) eligible(req heap.Request) (key, bool) {
	if req.Heap == "" || len(req.Devices) > 0 || req.Image != nil || req.NonContiguousFallback || req.Size <= 0 {
		return key{}, false
	}
	size := (req.Size + p.page - 1) / p.page * p.page
	if !slices.Contains(p.cfg.Sizes, size) {
		return key{}, false
	}
	h, err := p.src.Get(req.Heap)
	if err != nil || !p.pooled(req.Heap, h.Info()) {
		return key{}, false
	}
	return key{req.Heap, size}, true
}

// pooled reports whether the pool covers heap name.
func (p *Pool) pooled(name string, info heap.Info) bool {
	if info.Device != "" || info.Backend == heap.BackendDumb {
		return false
	}
	if len(p.cfg.Heaps) > 0 {
		return slices.Contains(p.cfg.Heaps, name)
	}
	return !info.Contiguous
}

// take removes one buffer of class k from its pool, or returns nil.
func (p *Pool) take(k key) *dmabuf.Buffer {
	p.mu.Lock()
	defer p.mu.Unlock()
	bs := p.free[k]
	if len(bs) == 0 || p.closed {
		return nil
	}
	b := bs[len(bs)-1]
	bs[len(bs)-1] = nil
	p.free[k] = bs[:len(bs)-1]
	p.bytes -= k.size
	return b
}

// Stats returns the current counters. Safe for concurrent use.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, bs := range p.free {
		n += len(bs)
	}
	return Stats{Bytes: p.bytes, Buffers: n, Hits: p.hits, Misses: p.misses}
}

// Close stops the refiller and closes every pooled buffer. It is
// idempotent and nil-safe; after it, Allocate goes to the source.
func (p *Pool) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if already {
		return nil
	}
	p.stop()
	<-p.done
	p.drain(func(key) bool { return true })
	return nil
}

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// drain closes the pooled buffers of every class for which match is true.
func (p *Pool) drain(match func(key) bool) {
	var out []*dmabuf.Buffer
	p.mu.Lock()
	for k, bs := range p.free {
		if match(k) {
			out = append(out, bs...)
			p.bytes -= int64(len(bs)) * k.size
			delete(p.free, k)
		}
	}
	p.mu.Unlock()
	for _, b := range out {
		b.Close()
	}
}

func (p *Pool) refiller(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(refillEvery)
	defer t.Stop()
	for {
		p.refill(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
	}
}

// refill tops up every pool, smallest classes first, within MaxBytes.
func (p *Pool) refill(ctx context.Context) {
	for _, info := range p.src.List() {
		if !p.pooled(info.Name, info) {
			continue
		}
		if info.Contiguous && info.CMATotal > 0 && info.CMAFree < p.cfg.CMAReserve {
			p.mu.Lock()
			was := p.drained[info.Name]
			p.drained[info.Name] = true
			p.mu.Unlock()
			if !was {
				p.log.Info("pool: CMA low, draining", "heap", info.Name, "cma_free", info.CMAFree, "reserve", p.cfg.CMAReserve)
			}
			p.drain(func(k key) bool { return k.heap == info.Name })
			continue
		}
		p.mu.Lock()
		delete(p.drained, info.Name)
		p.mu.Unlock()
		h, err := p.src.Get(info.Name)
		if err != nil {
			continue
		}
		for _, size := range p.cfg.Sizes {
			if info.MaxSize > 0 && size > info.MaxSize {
				continue
			}
			if !p.fill(ctx, h, key{info.Name, size}) {
				break
			}
		}
	}
}

// fill tops up one class; false means stop (closing, out of budget or
// allocation failing).
func (p *Pool) fill(ctx context.Context, h heap.Heap, k key) bool {
	for ctx.Err() == nil {
		p.mu.Lock()
		room := !p.closed && len(p.free[k]) < p.cfg.Depth && p.bytes+k.size <= p.cfg.MaxBytes
		if room {
			p.bytes += k.size // reserve the budget while allocating
		}
		p.mu.Unlock()
		if room {
			// The pool never takes a contiguous heap below the reserve
			// itself: only other users' allocations can drain it.
			if info := h.Info(); info.Contiguous && info.CMATotal > 0 && info.CMAFree-k.size < p.cfg.CMAReserve {
				p.mu.Lock()
				p.bytes -= k.size
				p.mu.Unlock()
				return false
			}
		}
		if !room {
			return ctx.Err() == nil
		}
		b, err := h.Alloc(ctx, k.size, heap.AllocOptions{Name: p.cfg.Name})
		if err == nil {
			err = prefault(b)
			if err != nil {
				b.Close()
			}
		}
		p.mu.Lock()
		if err != nil || p.closed {
			p.bytes -= k.size
			p.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				p.log.Warn("pool: refill failed", "heap", k.heap, "size", k.size, "err", err)
			} else if err == nil {
				b.Close()
			}
			return false
		}
		p.free[k] = append(p.free[k], b)
		p.mu.Unlock()
	}
	return false
}

// prefault maps b and writes a zero to every page, so its memory is
// allocated (and zeroed by the kernel) now rather than at the client's
// first touch. The contents stay all zero.
func prefault(b *dmabuf.Buffer) error { return b.FillPages(0) }
