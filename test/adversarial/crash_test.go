package adversarial

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

// kill -9 heapd under load: buffers already handed out stay mapped and
// valid; a new heapd replaces the stale socket; the Go client reconnects
// on its next call; the new heapd's ledger knows none of the old buffers
// (docs/security.md says so).
func TestCrashRestart(t *testing.T) {
	testutil.NeedRoot(t)
	d := daemontest.Start(t, &daemontest.Options{Policy: suitePolicy})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 64 << 10, Count: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m, err := a.Buffers[0].Map(dmabuf.ProtReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pattern := bytes.Repeat([]byte{0x3c}, len(m.Bytes()))
	copy(m.Bytes(), pattern)

	// Load: clients allocating and freeing while heapd dies and returns.
	var stop atomic.Bool
	var restarted atomic.Bool
	var okAfter [3]atomic.Int64
	var wg sync.WaitGroup
	for w := range okAfter {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := &client.Client{Socket: d.Socket}
			defer lc.Close()
			for !stop.Load() {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				b, err := lc.Alloc(rctx, "system", 4096)
				cancel()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				b.Close()
				if restarted.Load() {
					okAfter[w].Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)
	d.Kill()

	// The buffers outlive the daemon.
	if !bytes.Equal(m.Bytes(), pattern) {
		t.Error("the mapping changed when heapd died")
	}
	for i, b := range a.Buffers {
		m2, err := b.Map(dmabuf.ProtReadWrite)
		if err != nil {
			t.Fatalf("buffer %d after heapd died: map: %v", i, err)
		}
		m2.Bytes()[0] = byte(i)
		m2.Close()
	}
	if m.Bytes()[0] != 0 {
		t.Errorf("a write through a second mapping of buffer 0 is not seen by the first")
	}

	d2 := daemontest.Start(t, &daemontest.Options{Socket: d.Socket, Policy: suitePolicy})
	restarted.Store(true)
	// heapd's stderr reaches Log through a pipe: give the line a moment.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(d2.Log(), "stale socket") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(d2.Log(), "stale socket") {
		t.Errorf("the new heapd did not report replacing the stale socket:\n%s", tail(d2.Log()))
	}
	b, err := c.Alloc(ctx, "system", 4096)
	if err != nil {
		t.Fatalf("the client did not reconnect to the new heapd: %v", err)
	}
	b.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if okAfter[0].Load() > 0 && okAfter[1].Load() > 0 && okAfter[2].Load() > 0 {
			break
		}
	}
	for w := range okAfter {
		if okAfter[w].Load() == 0 {
			t.Errorf("load client %d never succeeded after the restart", w)
		}
	}
	stop.Store(true)
	wg.Wait()
	// The new heapd's ledger starts empty: none of the old buffers (by
	// inode: buffer ids restart at 1) is charged to anyone.
	tg2 := &target{d: d2}
	old := map[uint64]bool{}
	for _, b := range a.Buffers {
		var st unix.Stat_t
		if err := unix.Fstat(b.FD(), &st); err != nil {
			t.Fatal(err)
		}
		old[st.Ino] = true
	}
	for _, e := range tg2.ledger(t) {
		if old[e.Inode] {
			t.Errorf("the new heapd's ledger lists a buffer of the old one: %+v", e)
		}
	}
	m.Close()
	a.Close()
	c.Close()
	tg2.waitLedgerEmpty(t)
}
