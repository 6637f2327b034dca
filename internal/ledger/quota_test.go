package ledger

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/protocol"
)

// OnCharge sees every commit and release with the bytes the quota is
// charged, and Quotas reports use against the limits of the uid's rule:
// both drop back to zero once the buffers are freed.
func TestOnChargeAndQuotas(t *testing.T) {
	type call struct {
		heap        string
		uid         uint32
		bytes, bufs int64
	}
	var (
		mu  sync.Mutex
		got []call
	)
	l := New(&Config{Interval: time.Hour, OnCharge: func(heap string, uid uint32, b, n int64) {
		mu.Lock()
		got = append(got, call{heap, uid, b, n})
		mu.Unlock()
	}})
	t.Cleanup(func() { l.Close() })

	lim := limits(uint64(16*pageSize), 8)
	lim.Classes = map[string]daemon.Quota{daemon.ClassContiguous: {Bytes: uint64(4 * pageSize), Buffers: 2}}
	bufs, err := charge(t, l, emulatedAlloc, alice, pageSize+1, 2, lim)
	if err != nil {
		t.Fatal(err)
	}
	used := uint64(4 * pageSize) // two buffers of two pages each
	want := []QuotaUse{
		{UID: alice.UID, Bytes: used, Buffers: 2, Limit: lim.Total},
		{UID: alice.UID, Class: daemon.ClassContiguous, Limit: lim.Classes[daemon.ClassContiguous]},
		{UID: alice.UID, Class: daemon.ClassEmulated, Bytes: used, Buffers: 2, Limit: daemon.NoQuota},
	}
	if diff := cmp.Diff(want, l.Quotas()); diff != "" {
		t.Errorf("Quotas while held (-want +got):\n%s", diff)
	}

	closeAll(bufs)
	l.Sweep()
	for i := range want {
		want[i].Bytes, want[i].Buffers = 0, 0
	}
	if diff := cmp.Diff(want, l.Quotas()); diff != "" {
		t.Errorf("Quotas after release (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	wantCharges := []call{
		{"system", alice.UID, int64(used), 2},
		{"system", alice.UID, -2 * pageSize, -1},
		{"system", alice.UID, -2 * pageSize, -1},
	}
	if diff := cmp.Diff(wantCharges, got, cmp.AllowUnexported(call{})); diff != "" {
		t.Errorf("OnCharge calls (-want +got):\n%s", diff)
	}
}

// A uid that has not allocated is not reported; one refused by its quota
// is, with its limits.
func TestQuotasRefused(t *testing.T) {
	l := newLedger(t)
	if q := l.Quotas(); len(q) != 0 {
		t.Fatalf("a fresh ledger reports %v", q)
	}
	lim := limits(protocol.Unlimited, 0)
	if _, err := charge(t, l, emulatedAlloc, alice, pageSize, 1, lim); err == nil {
		t.Fatal("a quota of 0 buffers let one through")
	}
	want := []QuotaUse{{UID: alice.UID, Limit: daemon.Quota{Bytes: protocol.Unlimited, Buffers: 0}}}
	if diff := cmp.Diff(want, l.Quotas()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
