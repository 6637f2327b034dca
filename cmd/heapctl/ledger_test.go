package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/ledger"
	"github.com/heapd/heapd/internal/testutil"
)

// serveLedger runs heapd's server in-process with a ledger, its admin
// socket included, and points HEAPD_SOCKET at it.
func serveLedger(t *testing.T) string {
	t.Helper()
	reg, err := heap.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	led := ledger.New(&ledger.Config{Interval: 50 * time.Millisecond})
	srv, err := daemon.New(daemon.Config{Heaps: reg, Ledger: led, Version: "heapd test"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "socket")
	ln, err := daemon.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	aln, err := daemon.ListenAdmin(path + daemon.AdminSuffix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ctx, ln.UnixListener) }()
	go func() { done <- srv.ServeAdmin(ctx, aln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
		ln.Close()
		led.Close()
		reg.Close()
	})
	t.Setenv(client.EnvSocket, path)
	return path
}

func TestLedger(t *testing.T) {
	testutil.CheckFDs(t)
	serveLedger(t)
	out, err := heapctl(t, "ledger")
	if err != nil || !strings.Contains(out, "no live buffers") {
		t.Fatalf("empty ledger: %v\n%s", err, out)
	}
	c := &client.Client{}
	defer c.Close()
	b, err := c.Alloc(context.Background(), "system", 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err = heapctl(t, "ledger", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got ledgerOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Buffers) != 1 || got.Buffers[0].Size != 3<<20 || got.Buffers[0].Heap != "system" || !strings.HasSuffix(got.AdminSocket, ".admin") {
		t.Fatalf("ledger %+v", got)
	}
	out, err = heapctl(t, "ledger")
	if err != nil || !strings.Contains(out, "3 MiB") || !strings.Contains(out, "in 1 buffer") {
		t.Fatalf("table: %v\n%s", err, out)
	}
	t.Log("\n" + out)
	if _, err := heapctl(t, "ledger", "--admin-socket", filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "is heapd running") {
		t.Errorf("no daemon: %v", err)
	}
}
