package adversarial

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

// otherUID is the uid of the user whose data must not leak (heapd-test in
// the VM tier's /etc/passwd; any uid works for the kernel).
const otherUID = 1000

// Data isolation: on every heap heapd publishes (emulated on the host;
// the kernel system and CMA heaps, udmabuf, dumb buffers in the VM), a
// buffer handed out reads all-zero even right after another user filled
// and released a buffer of the same size.
func TestIsolation(t *testing.T) {
	tg := start(t)
	bin := helperBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := &client.Client{Socket: tg.d.Socket}
	defer c.Close()
	heaps, _, err := c.Heaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The check sees data where there is some.
	own, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := own.Buffers[0].Map(dmabuf.ProtReadWrite); err != nil {
		t.Fatal(err)
	} else {
		m.Bytes()[100] = 0x5a
		m.Close()
	}
	if off, v := firstNonZero(t, own.Buffers[0]); off != 100 || v != 0x5a {
		t.Fatalf("firstNonZero of a buffer with 0x5a at 100 = %d, 0x%02x", off, v)
	}
	own.Close()
	tested := 0
	for _, h := range heaps {
		for _, size := range []int64{4096, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d", h.Name, size), func(t *testing.T) {
				for round := range 3 {
					cmd := helper(bin, "fill", tg.d.Socket, otherUID, helperHeap+"="+h.Name, fmt.Sprintf("%s=%d", helperSize, size))
					out, err := cmd.CombinedOutput()
					if err != nil || strings.TrimSpace(string(out)) != "ok" {
						if strings.Contains(string(out), protocol.CodeNotSupported.String()) {
							t.Logf("heap %s does not serve plain sizes: %s", h.Name, out)
							return
						}
						t.Fatalf("uid %d filling a %d-byte buffer of %s: %v: %s", otherUID, size, h.Name, err, out)
					}
					a, err := c.Allocate(ctx, client.Request{Heap: h.Name, Size: size})
					if err != nil {
						t.Fatalf("allocating after uid %d: %v", otherUID, err)
					}
					if off, v := firstNonZero(t, a.Buffers[0]); off >= 0 {
						t.Errorf("round %d: a fresh %d-byte buffer of %s (%s) holds 0x%02x at offset %d right after uid %d filled one with 0x%02x",
							round, size, h.Name, a.Backend, v, off, otherUID, fillPattern)
					}
					a.Close()
				}
				tested++
			})
		}
	}
	if tested == 0 {
		t.Fatal("no heap could be tested")
	}
	c.Close()
	tg.check(t)
}

// firstNonZero maps b and returns the offset and value of its first
// non-zero byte, or -1.
func firstNonZero(t *testing.T, b *dmabuf.Buffer) (int, byte) {
	t.Helper()
	m, err := b.Map(dmabuf.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	off, val := -1, byte(0)
	err = b.CPUAccess(dmabuf.Read, func() error {
		for i, v := range m.Bytes() {
			if v != 0 {
				off, val = i, v
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return off, val
}
