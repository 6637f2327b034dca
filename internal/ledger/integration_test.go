package ledger

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// kernelHeaps opens the system heap and a CMA heap, or skips (fails in
// the VM tier).
func kernelHeaps(t *testing.T) []allocator {
	t.Helper()
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	infos, err := dmaheap.List()
	if err != nil {
		t.Fatal(err)
	}
	cma := ""
	for _, i := range infos {
		if i.Backing == dmaheap.BackingCMA && !i.Alias() && i.Path != "" {
			cma = i.Name
			break
		}
	}
	if cma == "" {
		testutil.Missing(t, "no CMA heap under /dev/dma_heap: kernel without CONFIG_DMABUF_HEAPS_CMA or booted without cma=?")
	}
	var out []allocator
	for _, h := range []struct {
		name string
		info heap.Info
	}{
		{"system", heap.Info{Name: "system", Backend: heap.BackendKernel}},
		{cma, heap.Info{Name: "contiguous", Backend: heap.BackendKernel, Properties: heap.Properties{Contiguous: true}}},
	} {
		dh, err := dmaheap.Open(h.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dh.Close() })
		out = append(out, allocator{name: h.name, info: h.info, alloc: func(t *testing.T, size int64) *dmabuf.Buffer {
			b, err := dh.Alloc(size)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}})
	}
	return out
}

func TestIntegrationQuotaExactKernel(t *testing.T) {
	for _, a := range kernelHeaps(t) {
		t.Run(a.name, func(t *testing.T) { testQuotaExact(t, a); testBufferLimit(t, a) })
	}
}

func TestIntegrationLifetimeKernel(t *testing.T) {
	for _, a := range kernelHeaps(t) {
		t.Run(a.name, func(t *testing.T) { testLifetime(t, a) })
	}
}

// What count: in a DMA-BUF's fdinfo counts, on the running kernel: every
// fd (dup or not), every mapping, fds in flight; reading fdinfo itself
// does not add one (the kernel subtracts procfs's reference).
func TestIntegrationCountSemantics(t *testing.T) {
	for _, a := range kernelHeaps(t) {
		t.Run(a.name, func(t *testing.T) {
			b := a.alloc(t, 64<<10)
			defer b.Close()
			// The ledger's way: fdinfo kept open, re-read with pread.
			cr, err := openCount(b.FD())
			if err != nil {
				t.Fatal(err)
			}
			defer cr.close()
			count := func(what string, want int64) {
				t.Helper()
				n, err := fileCount(b.FD())
				if err != nil {
					t.Fatal(err)
				}
				n2, err := cr.read()
				if err != nil {
					t.Fatal(err)
				}
				if n != want || n2 != n {
					t.Errorf("%s: count %d (open+read), %d (pread of the kept fdinfo), want %d", what, n, n2, want)
				}
			}
			count("one fd", 1)
			d, err := b.Dup()
			if err != nil {
				t.Fatal(err)
			}
			count("a dup", 2)
			unix.Close(d)
			count("dup closed", 1)
			m1, err := b.Map(dmabuf.ProtReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			m2, err := b.Map(dmabuf.ProtRead)
			if err != nil {
				t.Fatal(err)
			}
			count("two mappings", 3)
			m1.Close()
			m2.Close()
			count("unmapped", 1)
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Sendmsg(sp[0], []byte{1}, unix.UnixRights(b.FD()), nil, 0); err != nil {
				t.Fatal(err)
			}
			count("in flight", 2)
			unix.Close(sp[0])
			unix.Close(sp[1]) // the queued message and its fd are dropped
			count("queue dropped", 1)
			// Another process's view of the same file: its fdinfo shows the
			// same count (the kernel subtracts only its own reference).
			f, err := b.File()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", os.Getpid(), f.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			if n, err := parseCount(data); err != nil || n != 2 {
				t.Errorf("via /proc/PID: %d %v", n, err)
			}
			t.Logf("%s (%s): count: follows fds, dups, mappings and fds in flight; fdinfo reads do not count", a.name, kernelRelease())
		})
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// sweepCost tracks n buffers of a and reports one full sweep's time.
func sweepCost(t *testing.T, a allocator, n int) time.Duration {
	l := newLedger(t)
	bufs, err := charge(t, l, a, alice, 4096, 1, limits(protocol.Unlimited, protocol.Unlimited))
	if err != nil {
		t.Fatal(err)
	}
	for range n - 1 {
		more, err := charge(t, l, a, alice, 4096, 1, limits(protocol.Unlimited, protocol.Unlimited))
		if err != nil {
			t.Fatal(err)
		}
		bufs = append(bufs, more...)
	}
	defer closeAll(bufs)
	l.Sweep() // warm up
	var best time.Duration
	for range 5 {
		l.Sweep()
		if d := l.Stats().Duration; best == 0 || d < best {
			best = d
		}
	}
	if l.Stats().Buffers != n || l.Live() != n {
		t.Fatalf("sweep saw %d of %d", l.Stats().Buffers, n)
	}
	return best
}

// The cost of following buffers, per live buffer and sweep, for the
// numbers in docs/accounting.md.
func TestSweepCostEmulated(t *testing.T) {
	const n = 256
	d := sweepCost(t, emulatedAlloc, n)
	t.Logf("emulated: one sweep of %d buffers: %s, %s per buffer (%s)", n, d, d/n, kernelRelease())
}

func TestIntegrationSweepCostKernel(t *testing.T) {
	const n = 256
	for _, a := range kernelHeaps(t)[:1] {
		d := sweepCost(t, a, n)
		t.Logf("%s: one sweep of %d buffers: %s, %s per buffer (%s)", a.name, n, d, d/n, kernelRelease())
	}
}
