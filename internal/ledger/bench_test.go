package ledger

import (
	"testing"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/protocol"
)

// BenchmarkChargeRelease is the ledger's part of one allocation's life:
// Reserve + Commit + hand-off (charge), then, once the client closed the
// buffer, the sweep that finds it gone and releases the charge. The
// buffer's allocation and the client's close are not timed.
func BenchmarkChargeRelease(b *testing.B) {
	l := New(&Config{Interval: time.Hour})
	defer l.Close()
	lim := limits(protocol.Unlimited, protocol.Unlimited)
	req := daemon.AllocRequest{Heap: emuHeap, Size: pageSize, Count: 1}
	ids := []uint64{0}
	bufs := []*dmabuf.Buffer{nil}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		buf, err := emulated.Alloc(pageSize, "heapd:uid1000:bench")
		if err != nil {
			b.Fatal(err)
		}
		bufs[0], ids[0] = buf, nextID.Add(1)
		b.StartTimer()
		res, err := l.Reserve(alice, req, lim)
		if err != nil {
			b.Fatal(err)
		}
		if err := res.Commit(bufs, ids); err != nil {
			b.Fatal(err)
		}
		res.(daemon.HandOff).Handed()
		b.StopTimer()
		bufs[0].Close() // the client's close (Commit may have swapped the file)
		b.StartTimer()
		l.Sweep()
	}
	// A close can reach the kernel's file count a little later than
	// the sweep that follows it (deferred fput): the next sweeps catch up.
	for deadline := time.Now().Add(2 * time.Second); l.Live() != 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.Sweep()
	}
	if l.Live() != 0 {
		b.Fatalf("%d entries live after the sweeps", l.Live())
	}
}

// BenchmarkReserveWithLive is Reserve + Commit + hand-off while 1000
// other buffers of the same owner are live: the charge must not grow with
// what is already held.
func BenchmarkReserveWithLive(b *testing.B) {
	l := New(&Config{Interval: time.Hour})
	defer l.Close()
	lim := limits(protocol.Unlimited, protocol.Unlimited)
	req := daemon.AllocRequest{Heap: emuHeap, Size: pageSize, Count: 1}
	var held []*dmabuf.Buffer
	bufs := []*dmabuf.Buffer{nil}
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	charge := func() *dmabuf.Buffer {
		buf, err := emulated.Alloc(pageSize, "heapd:uid1000:bench")
		if err != nil {
			b.Fatal(err)
		}
		res, err := l.Reserve(alice, req, lim)
		if err != nil {
			b.Fatal(err)
		}
		bs := []*dmabuf.Buffer{buf}
		if err := res.Commit(bs, []uint64{nextID.Add(1)}); err != nil {
			b.Fatal(err)
		}
		res.(daemon.HandOff).Handed()
		return bs[0] // Commit may have swapped the file

	}
	for range 1000 {
		held = append(held, charge())
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		buf, err := emulated.Alloc(pageSize, "heapd:uid1000:bench")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := l.Reserve(alice, req, lim)
		if err != nil {
			b.Fatal(err)
		}
		bufs[0] = buf
		if err := res.Commit(bufs, []uint64{nextID.Add(1)}); err != nil {
			b.Fatal(err)
		}
		res.(daemon.HandOff).Handed()
		b.StopTimer()
		held = append(held, bufs[0])
		b.StartTimer()
	}
}
