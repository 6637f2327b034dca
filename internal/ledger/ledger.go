package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/units"
	"github.com/heapd/heapd/protocol"
)

// DefaultInterval is how often the sweep checks live buffers when
// Config.Interval is 0.
const DefaultInterval = time.Second

// ErrClosed is returned by Reserve and Commit after Close.
var ErrClosed = errors.New("ledger: closed")

// Config configures a Ledger. The zero value (and nil) works.
type Config struct {
	// Interval is how often every live buffer is checked for release
	// (DefaultInterval). It bounds how long a freed buffer stays charged
	// and its memory stays allocated.
	Interval time.Duration
	// Logger gets a line per release at Debug and per sweep problem at
	// Warn; nil discards.
	Logger *slog.Logger
	// ProcRoot is where /proc is for List's holders ("/proc"); the
	// ledger's own fds are always read through /proc/self.
	ProcRoot string
	// OnCharge, when not nil, is told every change of what a uid holds on
	// a heap: positive deltas when buffers are committed, negative when
	// they are released (metrics.Metrics.LiveBuffers fits). It is called
	// with the ledger's lock held, so the calls for one buffer arrive in
	// order; it must be quick and must not call the Ledger.
	OnCharge func(heap string, uid uint32, deltaBytes, deltaBuffers int64)
}

// Ledger charges buffers to uids for as long as they live. Create it with
// New and Close it when the daemon stops. Safe for concurrent use.
type Ledger struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	accounts map[uint32]*account
	entries  map[uint64]*entry
	closed   bool

	sweepMu sync.Mutex // one sweep at a time; Close waits for it
	stop    chan struct{}
	done    chan struct{}

	smu   sync.Mutex
	stats SweepStats
}

var (
	_ daemon.Ledger  = (*Ledger)(nil)
	_ daemon.Lister  = (*Ledger)(nil)
	_ daemon.HandOff = (*reservation)(nil)
)

// handOffWait bounds how long a Reserve about to be refused waits for the
// daemon to close its own fds of the uid's buffers just sent (it does so
// right after sendmsg returns; a client can answer faster than that).
const handOffWait = 250 * time.Millisecond

// SweepStats describe the last full sweep.
type SweepStats struct {
	// Buffers checked, Released of them, in Duration.
	Buffers, Released int
	Duration          time.Duration
	At                time.Time
}

type usage struct{ bytes, buffers uint64 }

func (u *usage) add(b, n uint64) { u.bytes += b; u.buffers += n }
func (u *usage) sub(b, n uint64) { u.bytes -= min(b, u.bytes); u.buffers -= min(n, u.buffers) }

type account struct {
	// lim are the limits of the rule that decided the uid's latest
	// Reserve: what Quotas reports the uid's use against.
	lim     daemon.Limits
	held    usage
	classes map[string]*usage
	heaps   map[string]*heapUsage
	handed  usage // since the daemon started
}

type heapUsage struct {
	usage
	class string
}

func (a *account) class(c string) *usage {
	u := a.classes[c]
	if u == nil {
		u = &usage{}
		a.classes[c] = u
	}
	return u
}

func (a *account) heap(h, class string) *heapUsage {
	u := a.heaps[h]
	if u == nil {
		u = &heapUsage{class: class}
		a.heaps[h] = u
	}
	return u
}

type entry struct {
	daemon.LedgerEntry
	ref      int         // kernel: the ledger's duplicate fd; -1 if none
	count    countReader // kernel: ref's fdinfo, kept open
	probe    int         // emulated: the ledger's read-only file; -1 if none
	charged  uint64      // bytes charged for it
	released bool
	// identified says Inode and Name were filled in (by List, under
	// sweepMu): Commit leaves them to the first List that needs them, so
	// the charge costs no /proc read or fstat.
	identified bool
	// pending is closed once the daemon closed its own fds of the buffer
	// (Handed): until then those fds keep it referenced, so it is held.
	pending chan struct{}
}

// handedOff reports whether the daemon no longer holds e.
func (e *entry) handedOff() bool {
	select {
	case <-e.pending:
		return true
	default:
		return false
	}
}

// New returns a Ledger and starts its sweep. cfg may be nil.
func New(cfg *Config) *Ledger {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	l := &Ledger{
		cfg:      c,
		log:      c.Logger,
		accounts: map[uint32]*account{},
		entries:  map[uint64]*entry{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go l.loop()
	return l
}

func (l *Ledger) loop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Sweep()
		}
	}
}

// Close stops the sweep and closes the ledger's references to every live
// buffer. Buffers already handed out stay valid: they belong to their
// holders; they are just no longer charged to anyone. Idempotent.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.sweepMu.Lock()
	defer l.sweepMu.Unlock()
	l.mu.Lock()
	es := make([]*entry, 0, len(l.entries))
	for _, e := range l.entries {
		es = append(es, e)
	}
	l.entries = map[uint64]*entry{}
	l.mu.Unlock()
	for _, e := range es {
		e.closeRefs()
	}
	return nil
}

func (e *entry) closeRefs() {
	e.count.close()
	if e.ref >= 0 {
		unix.Close(e.ref)
		e.ref = -1
	}
	if e.probe >= 0 {
		unix.Close(e.probe)
		e.probe = -1
	}
}

func (l *Ledger) accountLocked(uid uint32) *account {
	a := l.accounts[uid]
	if a == nil {
		a = &account{classes: map[string]*usage{}, heaps: map[string]*heapUsage{}}
		l.accounts[uid] = a
	}
	return a
}

// pageRound rounds n up to whole pages, saturating.
func pageRound(n int64) uint64 {
	page := uint64(os.Getpagesize())
	if n <= 0 {
		return 0
	}
	u := uint64(n)
	if u > (1<<63)-page {
		return 1 << 63
	}
	return (u + page - 1) &^ (page - 1)
}

// Reserve implements daemon.Ledger: it charges req to owner's uid if that
// keeps the uid within lim (in total and for the heap's class), atomically
// with every other Reserve. When it would not, it first checks that uid's
// buffers for ones freed since the last sweep, then decides.
func (l *Ledger) Reserve(owner *daemon.Identity, req daemon.AllocRequest, lim daemon.Limits) (daemon.Reservation, error) {
	count := uint64(max(req.Count, 1))
	bytes := pageRound(req.Size) * count
	if req.Size > 0 && bytes/count != pageRound(req.Size) {
		bytes = 1 << 63
	}
	class := daemon.HeapClass(req.Heap)
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, ErrClosed
		}
		a := l.accountLocked(owner.UID)
		a.lim = lim
		err := check(owner, a, class, bytes, count, lim)
		if err == nil {
			a.held.add(bytes, count)
			a.class(class).add(bytes, count)
			l.mu.Unlock()
			return &reservation{l: l, owner: *owner, heap: req.Heap.Name, class: class, bytes: bytes, count: count}, nil
		}
		var pending []chan struct{}
		for _, e := range l.entries {
			if e.UID == owner.UID && !e.handedOff() {
				pending = append(pending, e.pending)
			}
		}
		l.mu.Unlock()
		if attempt > 0 {
			return nil, err
		}
		// Maybe some of it was freed since the last sweep: once the
		// daemon has let go of what it just sent, look.
		deadline := time.NewTimer(handOffWait)
	wait:
		for _, p := range pending {
			select {
			case <-p:
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
		l.sweep(&owner.UID)
	}
}

// check returns the QUOTA error when charging bytes/count of class to a
// would exceed lim.
func check(owner *daemon.Identity, a *account, class string, bytes, count uint64, lim daemon.Limits) error {
	over := func(what string, held, add, limit uint64, unit func(uint64) string, key string) error {
		return protocol.Errorf(protocol.CodeQuota,
			"uid %d holds %s%s; %s more would exceed %s %s of %s; free buffers (close every fd and unmap them: heapd counts a buffer until no process holds it) or raise that quota",
			owner.UID, unit(held), what, unit(add), key, unit(limit), lim.Rule)
	}
	size := func(v uint64) string { return units.FormatSize(int64(min(v, 1<<62))) }
	bufs := func(v uint64) string {
		if v == 1 {
			return "1 buffer"
		}
		return fmt.Sprintf("%d buffers", v)
	}
	exceeds := func(held, add, limit uint64) bool {
		return limit != protocol.Unlimited && (add > limit || held > limit-add)
	}
	if exceeds(a.held.bytes, bytes, lim.Total.Bytes) {
		return over("", a.held.bytes, bytes, lim.Total.Bytes, size, "quota.bytes")
	}
	if exceeds(a.held.buffers, count, lim.Total.Buffers) {
		return over("", a.held.buffers, count, lim.Total.Buffers, bufs, "quota.buffers")
	}
	q := lim.Class(class)
	cu := a.classes[class]
	if cu == nil {
		cu = &usage{}
	}
	if exceeds(cu.bytes, bytes, q.Bytes) {
		return over(" of "+class+" memory", cu.bytes, bytes, q.Bytes, size, "quota."+class+".bytes")
	}
	if exceeds(cu.buffers, count, q.Buffers) {
		return over(" of "+class+" memory", cu.buffers, count, q.Buffers, bufs, "quota."+class+".buffers")
	}
	return nil
}

type reservation struct {
	l            *Ledger
	owner        daemon.Identity
	heap, class  string
	bytes, count uint64
	done         bool
	entries      []*entry
	handed       sync.Once
}

// Handed implements daemon.HandOff: the daemon has closed its own fds of
// the committed buffers, so from now on every reference but the ledger's
// is someone else's.
func (r *reservation) Handed() {
	r.handed.Do(func() {
		for _, e := range r.entries {
			close(e.pending)
		}
	})
}

// Cancel implements daemon.Reservation.
func (r *reservation) Cancel() {
	if r.done {
		return
	}
	r.done = true
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	a := r.l.accountLocked(r.owner.UID)
	a.held.sub(r.bytes, r.count)
	a.class(r.class).sub(r.bytes, r.count)
}

// Commit implements daemon.Reservation. Kernel buffers are tracked through
// a duplicate fd; each emulated buffer is replaced by a reopened file the
// ledger can follow (see the package doc). The buffers count as held
// until Handed is called.
func (r *reservation) Commit(bufs []*dmabuf.Buffer, ids []uint64) error {
	if r.done {
		return errors.New("ledger: reservation used twice")
	}
	if len(ids) != len(bufs) {
		r.Cancel()
		return fmt.Errorf("ledger: %d buffers but %d ids", len(bufs), len(ids))
	}
	now := time.Now()
	es := make([]*entry, 0, len(bufs))
	fail := func(err error) error {
		for _, e := range es {
			e.closeRefs()
		}
		r.Cancel()
		return err
	}
	for i, b := range bufs {
		e := &entry{ref: -1, probe: -1, count: countReader{-1}, pending: make(chan struct{})}
		e.LedgerEntry = daemon.LedgerEntry{
			ID: ids[i], UID: r.owner.UID, PID: r.owner.PID, Comm: r.owner.Comm,
			Heap: r.heap, Class: r.class, Size: b.Size(), Created: now, Emulated: b.Emulated(), References: -1,
		}
		var err error
		if b.Emulated() {
			var nb *dmabuf.Buffer
			nb, err = trackEmulated(b, e)
			if err == nil {
				b.Close()
				bufs[i] = nb
			}
		} else {
			err = trackKernel(b, e)
		}
		if err != nil {
			return fail(fmt.Errorf("ledger: cannot follow buffer %d: %w", ids[i], err))
		}
		e.charged = pageRound(e.Size)
		es = append(es, e)
	}
	l := r.l
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fail(ErrClosed)
	}
	r.done = true
	a := l.accountLocked(r.owner.UID)
	// The reservation estimated from the request; charge what the heap
	// really made (a device's pitch rule can make an image larger).
	var real uint64
	for _, e := range es {
		real += e.charged
	}
	a.held.sub(r.bytes, 0)
	a.held.add(real, 0)
	c := a.class(r.class)
	c.sub(r.bytes, 0)
	c.add(real, 0)
	a.heap(r.heap, r.class).add(real, uint64(len(es)))
	a.handed.add(real, uint64(len(es)))
	for _, e := range es {
		l.entries[e.ID] = e
	}
	if l.cfg.OnCharge != nil {
		l.cfg.OnCharge(r.heap, r.owner.UID, int64(min(real, 1<<62)), int64(len(es)))
	}
	r.entries = es
	l.mu.Unlock()
	return nil
}

// trackKernel keeps a duplicate fd of b and its fdinfo file open: two
// syscalls. The buffer's inode and name are read by List when asked for
// (identify).
func trackKernel(b *dmabuf.Buffer, e *entry) error {
	ref, err := b.Dup()
	if err != nil {
		return err
	}
	cr, err := openCount(ref)
	if err != nil {
		unix.Close(ref)
		return err
	}
	e.ref, e.count = ref, cr
	return nil
}

// trackEmulated makes b's memfd private to heapd's uid, keeps a
// read-only file of its own, and returns a new read-write file for the
// client (b itself is the caller's to close): three syscalls (fchmod and
// two opens through /proc/self/fd). It works on b's own fd, which the
// caller holds open for the call: no duplicate, no fstat, no fdinfo; the
// inode and name are read by List when asked for (identify).
func trackEmulated(b *dmabuf.Buffer, e *entry) (*dmabuf.Buffer, error) {
	fd := b.FD()
	if fd < 0 {
		return nil, dmabuf.ErrClosed
	}
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, os.NewSyscallError("fchmod", err)
	}
	self := "/proc/self/fd/" + strconv.Itoa(fd)
	probe, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: self, Err: err}
	}
	nb, err := b.Reopen(unix.O_RDWR) // the client's: no fstatfs, seals or lseek again
	if err != nil {
		unix.Close(probe)
		return nil, err
	}
	e.probe = probe
	return nb, nil
}

// identify fills in e's Inode and Name the first time List needs them,
// and returns the references to a kernel buffer other than the ledger's
// (-1 for an emulated buffer or when they cannot be read). A kernel
// buffer's fdinfo is read afresh each time (one pread, which also gives
// the count and the name a holder may have set since); an emulated
// buffer's memfd name is fixed, so it is read once. The caller holds
// sweepMu and e is not released.
func (e *entry) identify() int64 {
	refs := int64(-1)
	switch {
	case e.ref >= 0:
		info, err := e.count.info()
		if err != nil {
			return refs
		}
		refs = info.Count - 1
		e.Name = info.Name
		if info.Inode != 0 {
			e.Inode = info.Inode
		} else if !e.identified { // kernels before 5.14 print no ino: line
			var st unix.Stat_t
			if unix.Fstat(e.ref, &st) == nil {
				e.Inode = st.Ino
			}
		}
		e.identified = true
	case e.probe >= 0 && !e.identified:
		var st unix.Stat_t
		if unix.Fstat(e.probe, &st) != nil {
			return refs
		}
		e.Inode = st.Ino
		buf := make([]byte, 256)
		if n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(e.probe), buf); err == nil {
			e.Name = memfdName(string(buf[:n]))
		}
		e.identified = true
	}
	return refs
}

// memfdName returns a buffer's name from the /proc/self/fd link of its
// memfd ("/memfd:heapd-emulated:NAME (deleted)"), as dmabuf's Stat does.
func memfdName(link string) string {
	name := strings.TrimPrefix(link, "/memfd:")
	name = strings.TrimSuffix(name, " (deleted)")
	return strings.TrimPrefix(name, dmabuf.EmulatedNamePrefix)
}

// Usage implements daemon.Ledger.
func (l *Ledger) Usage(owner *daemon.Identity, lim daemon.Limits) daemon.LedgerUsage {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := daemon.LedgerUsage{
		Accounted:  true,
		LimitBytes: lim.Total.Bytes, LimitBuffers: lim.Total.Buffers, MaxAlloc: lim.MaxAlloc,
	}
	a := l.accounts[owner.UID]
	if a != nil {
		u.Bytes, u.Buffers = a.held.bytes, a.held.buffers
		u.TotalBytes, u.TotalBuffers = a.handed.bytes, a.handed.buffers
		for name, h := range a.heaps {
			q := lim.Class(h.class)
			u.Heaps = append(u.Heaps, protocol.HeapUsage{Heap: name, Bytes: h.bytes, Buffers: h.buffers, LimitBytes: q.Bytes, LimitBuffers: q.Buffers})
		}
	}
	// One line per class with a quota of its own: heaps of one class
	// share it.
	for class, q := range lim.Classes {
		var cu usage
		if a != nil && a.classes[class] != nil {
			cu = *a.classes[class]
		}
		u.Heaps = append(u.Heaps, protocol.HeapUsage{Heap: "class:" + class, Bytes: cu.bytes, Buffers: cu.buffers, LimitBytes: q.Bytes, LimitBuffers: q.Buffers})
	}
	daemon.SortHeapUsage(u.Heaps)
	return u
}

// Held returns what uid holds now: bytes and buffers.
func (l *Ledger) Held(uid uint32) (bytes, buffers uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.accounts[uid]; a != nil {
		return a.held.bytes, a.held.buffers
	}
	return 0, 0
}

// Live returns the number of buffers the ledger follows.
func (l *Ledger) Live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Stats returns what the last full sweep did.
func (l *Ledger) Stats() SweepStats {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.stats
}

// Sweep checks every live buffer now and releases those nobody holds any
// more. The background loop calls it every Interval.
func (l *Ledger) Sweep() { l.sweep(nil) }

// sweep checks the live buffers (of uid only, when not nil).
func (l *Ledger) sweep(uid *uint32) {
	l.sweepMu.Lock()
	defer l.sweepMu.Unlock()
	start := time.Now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	es := make([]*entry, 0, len(l.entries))
	for _, e := range l.entries {
		if uid == nil || e.UID == *uid {
			es = append(es, e)
		}
	}
	l.mu.Unlock()
	released := 0
	for _, e := range es {
		if !e.handedOff() {
			continue // the daemon is still sending it
		}
		held, err := e.held()
		if err != nil {
			l.log.Warn("ledger: cannot tell whether a buffer is still held; keeping it charged", "id", e.ID, "uid", e.UID, "err", err)
			continue
		}
		if !held {
			l.release(e)
			released++
		}
	}
	if uid == nil {
		l.smu.Lock()
		l.stats = SweepStats{Buffers: len(es), Released: released, Duration: time.Since(start), At: start}
		l.smu.Unlock()
	}
}

// held reports whether anyone but the ledger still holds e.
func (e *entry) held() (bool, error) {
	if e.ref >= 0 {
		n, err := e.count.read()
		if err != nil {
			return true, err
		}
		return n > 1, nil
	}
	return leaseHeld(e.probe)
}

// release uncharges e and closes the ledger's references.
func (l *Ledger) release(e *entry) {
	l.mu.Lock()
	if e.released {
		l.mu.Unlock()
		return
	}
	e.released = true
	delete(l.entries, e.ID)
	a := l.accountLocked(e.UID)
	a.held.sub(e.charged, 1)
	a.class(e.Class).sub(e.charged, 1)
	if h := a.heaps[e.Heap]; h != nil {
		h.sub(e.charged, 1)
		if h.buffers == 0 {
			delete(a.heaps, e.Heap)
		}
	}
	if l.cfg.OnCharge != nil {
		l.cfg.OnCharge(e.Heap, e.UID, -int64(min(e.charged, 1<<62)), -1)
	}
	l.mu.Unlock()
	e.closeRefs()
	l.log.Debug("buffer released", "id", e.ID, "uid", e.UID, "heap", e.Heap, "size", e.Size, "age", time.Since(e.Created).Round(time.Millisecond))
}

// List implements daemon.Lister: every live buffer with its holders
// (processes with an fd or a mapping of it), oldest first. Finding the
// holders walks /proc: it costs milliseconds, and sees every process only
// when the daemon runs as root.
func (l *Ledger) List(ctx context.Context) ([]daemon.LedgerEntry, error) {
	l.mu.Lock()
	es := make([]*entry, 0, len(l.entries))
	for _, e := range l.entries {
		es = append(es, e)
	}
	l.mu.Unlock()
	holders, err := scanHolders(ctx, l.cfg.ProcRoot)
	if err != nil {
		return nil, err
	}
	l.sweepMu.Lock() // refs stay open while counted
	out := make([]daemon.LedgerEntry, 0, len(es))
	for _, e := range es {
		refs := int64(-1)
		if !e.released {
			refs = e.identify()
		}
		le := e.LedgerEntry
		le.References = refs
		le.Holders = holders[e.Inode]
		if le.Holders == nil {
			le.Holders = []daemon.Holder{}
		}
		out = append(out, le)
	}
	l.sweepMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
