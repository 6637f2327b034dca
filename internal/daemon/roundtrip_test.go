package daemon_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/ledger"
	"github.com/heapd/heapd/internal/pool"
)

// BenchmarkServeAllocate is one Allocate through the whole server, client
// and socket included, with the lifetime-following ledger, on this
// machine's heaps (the emulated heap on a host without DMA-BUF heaps).
// The memory is 4 KiB, so what dominates is heapd's own work; run it
// with -cpuprofile to see where that goes (docs/performance.md).
func BenchmarkServeAllocate(b *testing.B) {
	for _, withPool := range []bool{false, true} {
		name := "pool=off"
		if withPool {
			name = "pool=on"
		}
		b.Run(name, func(b *testing.B) { benchServeAllocate(b, withPool) })
	}
}

func benchServeAllocate(b *testing.B, withPool bool) {
	reg, err := heap.Open(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	var heaps daemon.Heaps = reg
	if withPool {
		p, err := pool.New(reg, &pool.Config{MaxBytes: 1 << 20, Sizes: []int64{4096}, Depth: 64})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		heaps = p
	}
	led := ledger.New(&ledger.Config{Interval: 50 * time.Millisecond})
	defer led.Close()
	srv, err := daemon.New(daemon.Config{Heaps: heaps, Ledger: led})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "socket")
	ln, err := daemon.Listen(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln.UnixListener) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		ln.Close()
	}()
	c := &client.Client{Socket: path}
	defer c.Close()
	if buf, err := c.Alloc(ctx, "system", 4096); err != nil {
		b.Fatal(err)
	} else {
		buf.Close()
	}
	b.ReportAllocs()
	for b.Loop() {
		buf, err := c.Alloc(ctx, "system", 4096)
		if err != nil {
			b.Fatal(err)
		}
		buf.Close()
	}
}
