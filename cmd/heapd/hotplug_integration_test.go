package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// heapd follows a display driver unloading and loading again: a subscribed
// client sees scanout/<vkms> removed and added, allocations in between fail
// with a clear error, and a buffer allocated before stays valid.
func TestIntegrationDaemonFollowsVKMS(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedPath(t, "/dev/dma_heap/reserved", "kernel without CONFIG_DMABUF_HEAPS_CMA or booted without cma=?")
	ko, params := testutil.ReloadableModule(t, "vkms")
	d := daemontest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := &client.Client{Socket: d.Socket}
	defer c.Close()

	heaps, _, err := c.Heaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, h := range heaps {
		if strings.HasPrefix(h.Name, "scanout/") {
			name = h.Name
		}
	}
	if name == "" {
		t.Fatalf("no scanout/<vkms> heap published: %+v\n%s", heaps, d.Log())
	}
	before, err := c.Allocate(ctx, client.Request{Heap: name, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	events := make(chan protocol.Event, 32)
	ready := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() {
		watched <- c.Watch(wctx, protocol.EventsHeaps, func() { close(ready) }, func(ev protocol.Event) error {
			events <- ev
			return nil
		})
	}()
	defer func() { stopWatch(); <-watched }()
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("subscription not confirmed")
	}
	wait := func(kind protocol.EventKind) {
		t.Helper()
		for {
			select {
			case ev := <-events:
				t.Logf("event %v %s", ev.Kind, ev.Name)
				if ev.Kind == kind && ev.Name == name {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %v event for %s\n%s", kind, name, d.Log())
			}
		}
	}

	if err := testutil.UnloadModule("vkms"); err != nil {
		t.Fatalf("%v (heapd must not hold the display open)\n%s", err, d.Log())
	}
	wait(protocol.EventHeapRemoved)
	_, err = c.Allocate(ctx, client.Request{Heap: name, Size: 4096})
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeDeviceGone || !strings.Contains(perr.Message, "went away") {
		t.Errorf("allocation from the unloaded display: %v, want DEVICE_GONE naming the device", err)
	}
	if m, err := before.Buffers[0].Map(dmabuf.ProtRead); err != nil {
		t.Errorf("buffer from before the unload: %v", err)
	} else {
		m.Close()
	}

	if err := testutil.LoadModule(ko, params); err != nil {
		t.Fatal(err)
	}
	wait(protocol.EventHeapAdded)
	a, err := c.Allocate(ctx, client.Request{Heap: name, Size: 4096})
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	a.Close()
}
