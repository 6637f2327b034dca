package scan

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
)

// walk is the state of one Scan: what the process walk found, before the
// join. The per-OS file walk.run fills it.
type walk struct {
	cfg *Config
	log *slog.Logger

	bufs   map[uint64]*bufState
	order  []*bufState // bufs in the order found
	slab   []bufState  // where the next bufStates come from
	hslab  []Holder    // where first holders come from
	procs  map[int]*procState
	intern interner
	stats  Stats
	probs  []string

	// Per process, reused: the current process's holdings, committed only
	// when the whole process was read (a process that exits half-way
	// leaves nothing behind).
	curFDs  []dmabuf.Info
	curMaps []Mapping
}

type bufState struct {
	b     Buffer
	sized bool // Size came from fdinfo or bufinfo, not from a mapping
	// holders in walk order; a process is committed at once, so its
	// holder, if any, is the last one.
	holders []Holder
}

type procState struct {
	pid  int
	comm string
	uid  uint32
}

func newWalk(cfg *Config) *walk {
	return &walk{
		cfg:    cfg,
		log:    cfg.logger(),
		bufs:   map[uint64]*bufState{},
		procs:  map[int]*procState{},
		intern: interner{},
	}
}

func (w *walk) problem(format string, args ...any) {
	w.probs = append(w.probs, fmt.Sprintf(format, args...))
}

// buffer returns the state of the buffer with inode ino, creating it.
// States come from slabs: a system has thousands of buffers, and one
// allocation each (or a growing slice of them) costs a scan more than
// reading their fdinfo does.
func (w *walk) buffer(ino uint64) *bufState {
	if bs := w.bufs[ino]; bs != nil {
		return bs
	}
	if len(w.slab) == 0 {
		w.slab = make([]bufState, 256)
	}
	bs := &w.slab[0]
	w.slab = w.slab[1:]
	bs.b.Inode = ino
	w.bufs[ino] = bs
	w.order = append(w.order, bs)
	return bs
}

// commit records the holdings of process pid gathered in curFDs and
// curMaps. comm and uid are read only for processes that hold something.
func (w *walk) commit(pid int, describe func() (comm string, uid uint32)) {
	if len(w.curFDs) == 0 && len(w.curMaps) == 0 {
		return
	}
	comm, uid := describe()
	w.procs[pid] = &procState{pid: pid, comm: comm, uid: uid}
	holder := func(bs *bufState) *Holder {
		if n := len(bs.holders); n > 0 && bs.holders[n-1].PID == pid {
			return &bs.holders[n-1]
		}
		if bs.holders == nil {
			// Most buffers have one holder: give it a slot of a slab,
			// capped so that a second holder moves them out.
			if len(w.hslab) == 0 {
				w.hslab = make([]Holder, 256)
			}
			bs.holders, w.hslab = w.hslab[:1:1], w.hslab[1:]
			bs.holders[0] = Holder{PID: pid, Comm: comm}
			return &bs.holders[0]
		}
		bs.holders = append(bs.holders, Holder{PID: pid, Comm: comm})
		return &bs.holders[len(bs.holders)-1]
	}
	for _, info := range w.curFDs {
		bs := w.buffer(info.Inode)
		bs.b.Size, bs.b.Exporter, bs.b.Name, bs.b.Count = info.Size, info.Exporter, info.Name, info.Count
		bs.sized = true
		holder(bs).FDs++
	}
	for _, m := range w.curMaps {
		bs := w.buffer(m.Inode)
		h := holder(bs)
		h.Maps++
		h.Mapped += int64(m.Len())
		if !bs.sized {
			// Only mappings so far: the largest one is the best guess.
			bs.b.Size = max(bs.b.Size, int64(m.Len()))
			bs.b.Name = m.Name
		}
	}
	w.curFDs, w.curMaps = w.curFDs[:0], w.curMaps[:0]
}

// join adds debugfs, the heap list, CMA counters and the ledger to what
// the walk found and builds the three views.
func (w *walk) join(ctx context.Context) *Snapshot {
	s := &Snapshot{
		Buffers:   make([]Buffer, 0, len(w.order)),
		Processes: make([]Process, 0, len(w.procs)),
	}
	if w.cfg.noBufinfo() {
		w.stats.BufinfoSkipped = true
	} else {
		w.joinBufinfo()
	}

	// Every buffer now has its final size: order them (sorting pointers,
	// not the large Buffer values) and split each between its holders.
	slices.SortFunc(w.order, func(x, y *bufState) int {
		return cmp.Or(cmp.Compare(y.b.Size, x.b.Size), cmp.Compare(x.b.Inode, y.b.Inode))
	})
	procs := map[int]*Process{}
	for _, bs := range w.order {
		b := bs.b
		b.SizeEstimated = !bs.sized
		b.Holders = bs.holders
		if b.Holders == nil {
			b.Holders = []Holder{}
		}
		slices.SortFunc(b.Holders, func(x, y Holder) int { return cmp.Compare(x.PID, y.PID) })
		for i := range b.Holders {
			h := &b.Holders[i]
			h.Share = share(b.Size, len(b.Holders), i)
			p := procs[h.PID]
			if p == nil {
				ps := w.procs[h.PID]
				p = &Process{PID: h.PID, Comm: ps.comm, UID: ps.uid}
				procs[h.PID] = p
			}
			p.Buffers++
			p.FDs += h.FDs
			p.Maps += h.Maps
			p.Mapped += h.Mapped
			p.Bytes += b.Size
			p.Share += h.Share
		}
		s.Buffers = append(s.Buffers, b)
	}
	users := map[uint32]string{}
	for _, p := range procs {
		name, ok := users[p.UID]
		if !ok {
			if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); err == nil {
				name = u.Username
			}
			users[p.UID] = name
		}
		p.User = name
		s.Processes = append(s.Processes, *p)
	}

	s.Heaps = w.heaps(s.Buffers)
	w.joinLedger(ctx, s.Buffers)
	s.Stats, s.Problems = w.stats, w.probs
	sortSnapshot(s)
	return s
}

// joinBufinfo merges debugfs bufinfo: the authoritative size, exporter
// and name of every buffer, its attached devices, and the buffers no
// readable process holds.
func (w *walk) joinBufinfo() {
	path := w.cfg.bufinfoPath()
	data, err := os.ReadFile(path)
	if err != nil {
		w.log.Debug("bufinfo not read", "err", err)
		return
	}
	_, _, err = forEachBufinfo(data, func(e *BufinfoEntry) {
		bs := w.buffer(e.Inode)
		bs.b.Size, bs.b.Exporter, bs.b.Name, bs.b.Count = e.Size, e.Exporter, e.Name, e.Count
		bs.b.Devices = e.Devices
		if bs.b.Devices == nil {
			bs.b.Devices = []string{}
		}
		bs.b.Fences = e.Fences
		bs.sized = true
	})
	if err != nil {
		// Entries before the bad line are merged; say the rest is not.
		w.problem("%s: %v", path, err)
		return
	}
	w.stats.Bufinfo = true
}

// heaps builds the per-exporter view: every kernel heap, and every other
// exporter that buffers name.
func (w *walk) heaps(bufs []Buffer) []Heap {
	dcfg := &dmaheap.Config{ProcDir: w.cfg.procDir(), SysDir: w.cfg.sysDir(), DevDir: w.cfg.devDir()}
	byName := map[string]*Heap{}
	var order []string
	add := func(name string) *Heap {
		if p := byName[name]; p != nil {
			return p
		}
		p := &Heap{Name: name}
		byName[name] = p
		order = append(order, name)
		return p
	}
	list, err := dcfg.List()
	if err != nil {
		w.problem("heap list: %v", err)
	}
	var cma dmaheap.CMAStats
	anyCMA := false
	for _, hi := range list {
		if hi.Alias() {
			continue
		}
		h := add(hi.Name)
		h.Heap, h.Contiguous = true, hi.Contiguous()
		if hi.Name == "system" {
			h.HeapdName = "system"
		}
		anyCMA = anyCMA || h.Contiguous
	}
	if res, err := dmaheap.ResolveCMA(list); err == nil && byName[res.Heap.Name] != nil {
		byName[res.Heap.Name].HeapdName = "contiguous"
	}
	if anyCMA {
		if cma, err = dcfg.MemInfo(); err != nil {
			w.problem("CMA counters: %v", err)
		}
	}
	for _, b := range bufs {
		h := add(b.Exporter)
		h.Buffers++
		h.Bytes += b.Size
	}
	out := make([]Heap, 0, len(order))
	for _, name := range order {
		h := *byName[name]
		if h.Contiguous && cma.Present {
			h.CMATotal, h.CMAFree = cma.Total, cma.Free
		}
		out = append(out, h)
	}
	return out
}

// joinLedger asks the ledger for owners and sets Buffer.Owner.
func (w *walk) joinLedger(ctx context.Context, bufs []Buffer) {
	l := w.cfg.ledger()
	if l == nil {
		return
	}
	owners, err := l.Owners(ctx)
	if err != nil {
		w.problem("heapd ledger: %v", err)
		return
	}
	w.stats.Ledger = true
	for i := range bufs {
		if o, ok := owners[bufs[i].Inode]; ok {
			bufs[i].Owner = &o
		}
	}
}
