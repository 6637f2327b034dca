package adversarial

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

var soakFor = flag.Duration("soak", 3*time.Second, "how long TestSoak runs (make soak DURATION=...)")

// counts is a set of named counters, safe for concurrent use.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *counts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []string
	for k := range c.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-40s %d", k, c.m[k])
	}
	return b.String()
}

func (c *counts) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// TestSoak mixes well-behaved clients with every attack, at random, for
// -soak (3 s by default, so that make unit runs a short one; make soak
// runs minutes), sampling heapd's fds, goroutines and RSS as it goes.
// Well-behaved clients must never fail; at the end the usual checks
// (ledger empty, fds and goroutines at the baseline, RSS bounded) apply.
func TestSoak(t *testing.T) {
	tg := start(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("soak for %v, random seed %d", *soakFor, seed)
	ctx, cancel := context.WithTimeout(context.Background(), *soakFor)
	defer cancel()
	var good, bad counts
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			soakGood(ctx, t, tg, rand.New(rand.NewPCG(seed, uint64(w))), &good)
		}()
	}
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
			for ctx.Err() == nil {
				soakAttack(t, tg, rng, &bad)
			}
		}()
	}
	bin := helperBinary(t)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			mode := []string{"inflight", "inflight-hang"}[i%2]
			cmd := helper(bin, mode, tg.d.Socket, 0)
			out, err := cmd.StdoutPipe()
			if err == nil && cmd.Start() == nil {
				line := make([]byte, 5)
				_, _ = out.Read(line)
				if mode == "inflight-hang" {
					_ = cmd.Process.Kill()
				}
				_ = cmd.Wait()
				bad.add("exit with fds in flight (" + mode + ")")
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	var maxFDs, maxG int
	var maxRSS int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
sample:
	for {
		select {
		case <-ctx.Done():
			break sample
		case <-tick.C:
			maxFDs = max(maxFDs, len(tg.d.FDs()))
			maxG = max(maxG, tg.goroutines(t))
			rss := tg.rss(t)
			maxRSS = max(maxRSS, rss)
			if rss > tg.baseRSS+rssSlack {
				t.Errorf("heapd's RSS reached %d MiB during the soak (baseline %d MiB)", rss>>20, tg.baseRSS>>20)
			}
		}
	}
	wg.Wait()
	t.Logf("well-behaved requests by result:%s", good.String())
	t.Logf("attacks by kind:%s", bad.String())
	t.Logf("peaks during the soak: %d fds (baseline %d), %d goroutines (baseline %d), RSS %d MiB (baseline %d)",
		maxFDs, len(tg.baseFDs), maxG, tg.baseG, maxRSS>>20, tg.baseRSS>>20)
	if good.get("ok") == 0 {
		t.Error("no well-behaved request succeeded")
	}
	tg.check(t)
}

// soakGood is a well-behaved client: allocations of random sizes and
// counts, each checked to read zero, freed at once or a little later.
func soakGood(ctx context.Context, t *testing.T, tg *target, rng *rand.Rand, n *counts) {
	c := &client.Client{Socket: tg.d.Socket}
	defer c.Close()
	var held []*client.Allocation
	defer func() {
		for _, a := range held {
			a.Close()
		}
	}()
	for ctx.Err() == nil {
		size := int64(4096) << rng.IntN(8) // at most 512 KiB: the VM has 1 GiB
		count := 1 + rng.IntN(4)
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a, err := c.Allocate(rctx, client.Request{Heap: "system", Size: size, Count: count})
		cancel()
		if err != nil {
			var pe *protocol.Error
			if errors.As(err, &pe) {
				n.add("error " + pe.Code.String())
			} else {
				n.add("error (no answer)")
			}
			t.Errorf("well-behaved Allocate(%d×%d): %v", count, size, err)
			continue
		}
		n.add("ok")
		if m, err := a.Buffers[0].Map(dmabuf.ProtRead); err == nil {
			if p := m.Bytes(); p[0] != 0 || p[len(p)-1] != 0 {
				t.Errorf("a fresh buffer is not zero")
			}
			m.Close()
		}
		held = append(held, a)
		if len(held) > 4 || rng.IntN(2) == 0 {
			i := rng.IntN(len(held))
			held[i].Close()
			held = slices.Delete(held, i, i+1)
		}
	}
}

// soakAttack runs one quick attack picked at random. Its outcome is
// counted, not checked: TestAttacks checks each answer; the soak checks
// that heapd survives them all mixed with normal traffic.
func soakAttack(t *testing.T, tg *target, rng *rand.Rand, n *counts) {
	r, err := dialRaw(tg.d.Socket)
	if err != nil {
		n.add("dial error")
		return
	}
	defer r.Close()
	answer := func(kind string) {
		_, m, err := r.recv(10 * time.Second)
		switch m := m.(type) {
		case *protocol.Error:
			n.add(kind + ": " + m.Code.String())
		case nil:
			if isClosed(err) {
				n.add(kind + ": hung up")
			} else {
				n.add(kind + ": no answer")
				t.Errorf("%s: no answer from heapd: %v", kind, err)
			}
		default:
			n.add(kind + ": " + m.Type().String())
		}
	}
	handshake := func() bool {
		if r.send(1, hello) != nil {
			return false
		}
		_, m, _ := r.recv(10 * time.Second)
		_, ok := m.(*protocol.HelloReply)
		if !ok {
			n.add("hello refused")
		}
		return ok
	}
	switch rng.IntN(9) {
	case 0:
		b := make([]byte, rng.IntN(protocol.MaxMessageSize))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if r.sendRaw(b) == nil {
			answer("garbage")
		}
	case 1:
		hb, _ := protocol.Encode(1, hello)
		if r.sendRaw(hb[:rng.IntN(len(hb))]) == nil {
			answer("truncated Hello")
		}
	case 2:
		if !handshake() {
			return
		}
		fds := make([]int, 1+rng.IntN(250))
		var p [2]int
		if err := pipe(p[:]); err != nil {
			return
		}
		for i := range fds {
			fds[i] = p[i%2]
		}
		err := r.sendRaw(listHeapsWithFDs(0), fds...)
		closeFDs(p[:])
		if err == nil {
			answer("unsolicited fds")
		}
	case 3:
		if handshake() && r.sendRaw(allocBytes("system", 1<<63, nil)) == nil {
			answer("size 2^63")
		}
	case 4:
		if handshake() && r.sendRaw(allocBytes("no-such-heap", 4096, nil)) == nil {
			answer("unknown heap")
		}
	case 5:
		if handshake() {
			_ = r.sendRaw(allocBytes("system", 64<<10, func(b []byte) { binary.LittleEndian.PutUint16(b[2:], protocol.MaxBatch) }))
			n.add("disconnect mid-request")
		}
	case 6:
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		n.add("idle connection")
	case 7:
		if handshake() {
			list, _ := protocol.Encode(9, &protocol.ListHeaps{})
			for range 200 {
				if r.sendRaw(list) != nil {
					break
				}
			}
			n.add("never reads")
		}
	case 8:
		if r.send(1, &protocol.Hello{Major: 2}) == nil {
			answer("wrong version")
		}
	}
}
