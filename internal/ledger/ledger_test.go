package ledger

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/protocol"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	daemontest.Main(m)
}

var (
	alice    = &daemon.Identity{UID: 1000, GID: 1000, PID: 42, Comm: "weston"}
	emuHeap  = heap.Info{Name: "system", Backend: heap.BackendEmulated}
	pageSize = int64(unix.Getpagesize())
)

func limits(bytes, buffers uint64) daemon.Limits {
	return daemon.Limits{Rule: `rule 3 "graphics" (heapd.toml line 20)`, Total: daemon.Quota{Bytes: bytes, Buffers: buffers}, MaxAlloc: protocol.Unlimited}
}

// newLedger returns a ledger whose background sweep never runs during the
// test: tests sweep by hand.
func newLedger(t *testing.T) *Ledger {
	l := New(&Config{Interval: time.Hour})
	t.Cleanup(func() { l.Close() })
	return l
}

// allocator makes one buffer of a kind.
type allocator struct {
	name  string
	info  heap.Info
	alloc func(t *testing.T, size int64) *dmabuf.Buffer
}

var emulatedAlloc = allocator{name: "emulated", info: emuHeap, alloc: func(t *testing.T, size int64) *dmabuf.Buffer {
	b, err := emulated.Alloc(size, "heapd:uid1000:test")
	if err != nil {
		t.Fatal(err)
	}
	return b
}}

// charge reserves and commits n buffers of size for owner; it returns
// the buffers as the client would get them (owned by the test).
func charge(t *testing.T, l *Ledger, a allocator, owner *daemon.Identity, size int64, n int, lim daemon.Limits) ([]*dmabuf.Buffer, error) {
	t.Helper()
	res, err := l.Reserve(owner, daemon.AllocRequest{Heap: a.info, Size: size, Count: n}, lim)
	if err != nil {
		return nil, err
	}
	bufs := make([]*dmabuf.Buffer, n)
	ids := make([]uint64, n)
	for i := range bufs {
		bufs[i] = a.alloc(t, size)
		ids[i] = nextID.Add(1)
	}
	if err := res.Commit(bufs, ids); err != nil {
		for _, b := range bufs {
			b.Close()
		}
		t.Fatal(err)
	}
	// The test is the client: the daemon would now send and close.
	res.(daemon.HandOff).Handed()
	return bufs, nil
}

var nextID atomic.Uint64

func closeAll(bufs []*dmabuf.Buffer) {
	for _, b := range bufs {
		b.Close()
	}
}

func wantHeld(t *testing.T, l *Ledger, uid uint32, bytes, buffers uint64) {
	t.Helper()
	b, n := l.Held(uid)
	if b != bytes || n != buffers {
		t.Fatalf("uid %d holds %d bytes in %d buffers, want %d in %d", uid, b, n, bytes, buffers)
	}
}

func testQuotaExact(t *testing.T, a allocator) {
	l := newLedger(t)
	lim := limits(uint64(4*pageSize), protocol.Unlimited)
	first, err := charge(t, l, a, alice, 3*pageSize, 1, lim)
	if err != nil {
		t.Fatal(err)
	}
	// Exactly reaching the quota is allowed...
	second, err := charge(t, l, a, alice, 1, 1, lim)
	if err != nil {
		t.Fatalf("the last page of the quota: %v", err)
	}
	wantHeld(t, l, alice.UID, uint64(4*pageSize), 2)
	// ...one byte more is not, and the message says which limit of which rule.
	_, err = charge(t, l, a, alice, 1, 1, lim)
	if !errors.Is(err, protocol.CodeQuota) || !strings.Contains(err.Error(), "quota.bytes") || !strings.Contains(err.Error(), `rule 3 "graphics"`) {
		t.Fatalf("over quota: %v", err)
	}
	// Another uid is not affected.
	bob := &daemon.Identity{UID: 1001}
	other, err := charge(t, l, a, bob, 4*pageSize, 1, lim)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(other)
	// The client closes its fd; the next Reserve finds the room at once,
	// without waiting for the sweep.
	closeAll(first)
	third, err := charge(t, l, a, alice, 3*pageSize, 1, lim)
	if err != nil {
		t.Fatalf("after freeing: %v", err)
	}
	wantHeld(t, l, alice.UID, uint64(4*pageSize), 2)
	closeAll(second)
	closeAll(third)
	l.Sweep()
	wantHeld(t, l, alice.UID, 0, 0)
	wantHeld(t, l, bob.UID, 0, 0)
	if l.Live() != 0 {
		t.Errorf("%d live entries after everything was freed", l.Live())
	}
}

func TestQuotaExactEmulated(t *testing.T) { testQuotaExact(t, emulatedAlloc) }

func testBufferLimit(t *testing.T, a allocator) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, 3)
	bufs, err := charge(t, l, a, alice, 1, 3, lim)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(bufs)
	_, err = charge(t, l, a, alice, 1, 1, lim)
	if !errors.Is(err, protocol.CodeQuota) || !strings.Contains(err.Error(), "quota.buffers") {
		t.Fatalf("4th buffer: %v", err)
	}
}

func TestBufferLimitEmulated(t *testing.T) { testBufferLimit(t, emulatedAlloc) }

// Per-class quotas: contiguous memory has its own bound.
func TestClassQuota(t *testing.T) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, protocol.Unlimited)
	lim.Classes = map[string]daemon.Quota{daemon.ClassContiguous: {Bytes: uint64(2 * pageSize), Buffers: protocol.Unlimited}}
	cma := heap.Info{Name: "contiguous", Backend: heap.BackendKernel, Properties: heap.Properties{Contiguous: true}}
	req := daemon.AllocRequest{Heap: cma, Size: 2 * pageSize, Count: 1}
	r, err := l.Reserve(alice, req, lim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reserve(alice, daemon.AllocRequest{Heap: cma, Size: 1, Count: 1}, lim); !errors.Is(err, protocol.CodeQuota) || !strings.Contains(err.Error(), "quota.contiguous.bytes") {
		t.Fatalf("second contiguous: %v", err)
	}
	// Another class is not bounded by it.
	r2, err := l.Reserve(alice, daemon.AllocRequest{Heap: emuHeap, Size: 16 * pageSize, Count: 1}, lim)
	if err != nil {
		t.Fatal(err)
	}
	u := l.Usage(alice, lim)
	if !u.Accounted || u.Bytes != uint64(18*pageSize) || u.Buffers != 2 {
		t.Errorf("usage %+v", u)
	}
	var classRow *protocol.HeapUsage
	for i := range u.Heaps {
		if u.Heaps[i].Heap == "class:contiguous" {
			classRow = &u.Heaps[i]
		}
	}
	if classRow == nil || classRow.Bytes != uint64(2*pageSize) || classRow.LimitBytes != uint64(2*pageSize) {
		t.Errorf("class row %+v in %+v", classRow, u.Heaps)
	}
	r.Cancel()
	r2.Cancel()
	wantHeld(t, l, alice.UID, 0, 0)
}

// 64 goroutines race for a quota of 10 buffers: exactly 10 win.
func TestParallelReserveCannotOvershoot(t *testing.T) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, 10)
	var (
		wg   sync.WaitGroup
		won  atomic.Int32
		mu   sync.Mutex
		all  []*dmabuf.Buffer
		errs atomic.Int32
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs, err := charge(t, l, emulatedAlloc, alice, pageSize, 1, lim)
			if err != nil {
				if !errors.Is(err, protocol.CodeQuota) {
					t.Error(err)
				}
				errs.Add(1)
				return
			}
			won.Add(1)
			mu.Lock()
			all = append(all, bufs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer closeAll(all)
	if won.Load() != 10 || errs.Load() != 54 {
		t.Fatalf("%d won, %d refused; want 10 and 54", won.Load(), errs.Load())
	}
	wantHeld(t, l, alice.UID, uint64(10*pageSize), 10)
}

// Emulated buffers: the charge follows fds, mappings and fds in flight.
func TestEmulatedLifetime(t *testing.T) {
	testLifetime(t, emulatedAlloc)
}

func testLifetime(t *testing.T, a allocator) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, protocol.Unlimited)
	sweep := func() {
		t.Helper()
		l.Sweep()
	}
	t.Run("fd", func(t *testing.T) {
		bufs, _ := charge(t, l, a, alice, pageSize, 1, lim)
		dup, err := bufs[0].Clone()
		if err != nil {
			t.Fatal(err)
		}
		bufs[0].Close()
		sweep()
		wantHeld(t, l, alice.UID, uint64(pageSize), 1)
		dup.Close()
		sweep()
		wantHeld(t, l, alice.UID, 0, 0)
	})
	t.Run("mapping", func(t *testing.T) {
		bufs, _ := charge(t, l, a, alice, pageSize, 1, lim)
		m, err := bufs[0].Map(dmabuf.ProtReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		bufs[0].Close()
		sweep()
		wantHeld(t, l, alice.UID, uint64(pageSize), 1)
		m.Close()
		sweep()
		wantHeld(t, l, alice.UID, 0, 0)
	})
	t.Run("in flight", func(t *testing.T) {
		// An fd parked in a socket's queue still holds the memory.
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(sp[1])
		bufs, _ := charge(t, l, a, alice, pageSize, 1, lim)
		if err := unix.Sendmsg(sp[0], []byte{1}, unix.UnixRights(bufs[0].FD()), nil, 0); err != nil {
			t.Fatal(err)
		}
		bufs[0].Close()
		sweep()
		wantHeld(t, l, alice.UID, uint64(pageSize), 1)
		unix.Close(sp[0]) // the queue is sp[1]'s: still there
		sweep()
		wantHeld(t, l, alice.UID, uint64(pageSize), 1)
		buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := unix.Recvmsg(sp[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&cmsgs[0])
		sweep()
		wantHeld(t, l, alice.UID, uint64(pageSize), 1)
		unix.Close(fds[0])
		sweep()
		wantHeld(t, l, alice.UID, 0, 0)
	})
	t.Run("list", func(t *testing.T) {
		bufs, _ := charge(t, l, a, alice, 3*pageSize, 1, lim)
		defer closeAll(bufs)
		es, err := l.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || es[0].UID != alice.UID || es[0].Size != 3*pageSize || es[0].Heap != a.info.Name || es[0].Inode == 0 {
			t.Fatalf("list %+v", es)
		}
		// Commit leaves the inode, name and count to List: they must be
		// the buffer's own.
		var st unix.Stat_t
		if err := unix.Fstat(bufs[0].FD(), &st); err != nil {
			t.Fatal(err)
		}
		if es[0].Inode != st.Ino {
			t.Errorf("list inode %d, the buffer's is %d", es[0].Inode, st.Ino)
		}
		if bufs[0].Emulated() {
			if es[0].Name != "heapd:uid1000:test" || es[0].References != -1 {
				t.Errorf("list name %q references %d, want the memfd's name and -1", es[0].Name, es[0].References)
			}
		} else {
			// One reference: bufs[0] (the ledger's own is not counted).
			if es[0].References != 1 {
				t.Errorf("list references %d, want 1", es[0].References)
			}
			// A kernel buffer's name is read afresh: a rename shows.
			if err := bufs[0].SetName("renamed"); err != nil {
				t.Fatal(err)
			}
			if es, err = l.List(context.Background()); err != nil || len(es) != 1 || es[0].Name != "renamed" || es[0].Inode != st.Ino {
				t.Errorf("list after rename %+v, %v", es, err)
			}
		}
		// The test process is the ledger's own process, which List leaves
		// out; the holder scan itself is tested from the daemon's side.
		t.Logf("entry %+v", es[0])
	})
}

// The ledger makes an emulated buffer's memfd private to heapd's uid, so
// no other uid can open a second, untracked file for it via /proc.
func TestEmulatedMemfdPrivate(t *testing.T) {
	l := newLedger(t)
	bufs, _ := charge(t, l, emulatedAlloc, alice, pageSize, 1, limits(protocol.Unlimited, protocol.Unlimited))
	defer closeAll(bufs)
	var st unix.Stat_t
	if err := unix.Fstat(bufs[0].FD(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o600 {
		t.Errorf("memfd mode %o, want 0600", st.Mode&0o777)
	}
	if !bufs[0].Emulated() {
		t.Error("replacement is not an emulated buffer")
	}
	m, err := bufs[0].Map(dmabuf.ProtReadWrite)
	if err != nil {
		t.Fatalf("the client's file must be writable: %v", err)
	}
	m.Close()
}

func TestCancelAndCommitErrors(t *testing.T) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, protocol.Unlimited)
	r, err := l.Reserve(alice, daemon.AllocRequest{Heap: emuHeap, Size: pageSize, Count: 2}, lim)
	if err != nil {
		t.Fatal(err)
	}
	wantHeld(t, l, alice.UID, uint64(2*pageSize), 2)
	if err := r.Commit([]*dmabuf.Buffer{nil}, []uint64{1, 2}); err == nil {
		t.Error("mismatched ids accepted")
	}
	wantHeld(t, l, alice.UID, 0, 0)
	r.Cancel() // after a failed Commit: nothing more to undo
	wantHeld(t, l, alice.UID, 0, 0)
	l.Close()
	if _, err := l.Reserve(alice, daemon.AllocRequest{Heap: emuHeap, Size: 1, Count: 1}, lim); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestParseCount(t *testing.T) {
	n, err := parseCount([]byte("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1234\nsize:\t4096\ncount:\t3\nexp_name:\tsystem\n"))
	if err != nil || n != 3 {
		t.Errorf("%d %v", n, err)
	}
	if _, err := parseCount([]byte("pos:\t0\n")); err == nil {
		t.Error("no count line accepted")
	}
	if _, err := parseCount([]byte("count:\tx\n")); err == nil {
		t.Error("bad count accepted")
	}
}

// Until the daemon has closed its own fds of a buffer it just sent
// (Handed), the buffer counts as held; a Reserve about to be refused waits
// for that before it re-checks, so a client that frees and asks again at
// once is not refused because heapd's writer had not caught up.
func TestHandOffPending(t *testing.T) {
	l := newLedger(t)
	lim := limits(protocol.Unlimited, 1)
	res, err := l.Reserve(alice, daemon.AllocRequest{Heap: emuHeap, Size: pageSize, Count: 1}, lim)
	if err != nil {
		t.Fatal(err)
	}
	bufs := []*dmabuf.Buffer{emulatedAlloc.alloc(t, pageSize)}
	if err := res.Commit(bufs, []uint64{nextID.Add(1)}); err != nil {
		t.Fatal(err)
	}
	bufs[0].Close() // the client closed; the "daemon" has not said so yet
	l.Sweep()
	wantHeld(t, l, alice.UID, uint64(pageSize), 1)
	time.AfterFunc(20*time.Millisecond, res.(daemon.HandOff).Handed)
	bufs2, err := charge(t, l, emulatedAlloc, alice, pageSize, 1, lim)
	if err != nil {
		t.Fatalf("after the hand-off: %v", err)
	}
	closeAll(bufs2)
}
