package heap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/internal/uevent"
)

// The RFC's "unregister the heap when the driver unloads", in user space:
// unloading vkms retires scanout/<vkms> at once (a buffer allocated before
// stays valid), loading it again republishes it.
func TestIntegrationHotplugVKMS(t *testing.T) {
	needVM(t)
	ko, params := testutil.ReloadableModule(t, "vkms")
	testutil.CheckFDs(t)

	l, err := uevent.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Logf("listening with %s", l)
	changes := make(chan Change, 64)
	r, err := Open(&Config{OnChange: func(cs []Change) {
		for _, c := range cs {
			changes <- c
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	followed := make(chan error, 1)
	go func() { followed <- r.Follow(ctx, l, 50*time.Millisecond) }()
	defer func() { cancel(); <-followed }()

	res, err := r.Resolution("vkms")
	if err != nil {
		t.Fatal(err)
	}
	name := "scanout/" + res.Device
	buf, err := r.Alloc(context.Background(), name, 1<<20, AllocOptions{Name: "before-unload"})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()

	wait := func(kind ChangeKind) Change {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case c := <-changes:
				t.Logf("change: %s %s (%s)", c.Kind, c.Heap, c.Reason)
				if c.Kind == kind && c.Heap == name {
					return c
				}
			case <-deadline:
				t.Fatalf("no %s event for %s within 15 s", kind, name)
			}
		}
	}

	start := time.Now()
	if err := testutil.UnloadModule("vkms"); err != nil {
		t.Fatalf("%v (does something still hold a vkms fd?)", err)
	}
	c := wait(Retired)
	t.Logf("retired %v after unload", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(c.Reason, "went away") {
		t.Errorf("retire reason %q does not say the device went away", c.Reason)
	}
	if _, err := r.Alloc(context.Background(), name, 4096, AllocOptions{}); !errors.Is(err, ErrRetired) || !strings.Contains(err.Error(), res.Device) {
		t.Errorf("allocation after unload: %v, want ErrRetired naming %s", err, res.Device)
	}
	if _, err := r.Get("scanout"); err == nil {
		t.Error("default scanout still published with no display left")
	}
	// The buffer from before is the kernel's refcounted object: still valid.
	m, err := buf.Map(dmabuf.ProtReadWrite)
	if err != nil {
		t.Fatalf("buffer allocated before the unload no longer maps: %v", err)
	}
	err = buf.CPUAccess(dmabuf.Write, func() error { m.Bytes()[0] = 0x5a; return nil })
	m.Close()
	if err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	if err := testutil.LoadModule(ko, params); err != nil {
		t.Fatal(err)
	}
	wait(Published)
	t.Logf("republished %v after load", time.Since(start).Round(time.Millisecond))
	if _, err := r.Get(name); err != nil {
		t.Errorf("after reload: %v", err)
	}
}

// Allocations in flight while the display goes away either succeed with a
// valid buffer or fail with an error; never a crash or a leaked fd.
func TestIntegrationHotplugRace(t *testing.T) {
	needVM(t)
	ko, params := testutil.ReloadableModule(t, "vkms")
	testutil.CheckFDs(t)
	r, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	disp, err := r.Resolution("vkms")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	type result struct{ ok, failed int }
	results := make(chan result, 4)
	for range 4 {
		go func() {
			var res result
			for {
				select {
				case <-stop:
					results <- res
					return
				default:
				}
				a, err := r.Allocate(context.Background(), Request{Devices: []string{"vkms"}, Size: 64 << 10})
				if err != nil {
					res.failed++
					continue
				}
				if a.Buffer.Size() < 64<<10 {
					t.Errorf("short buffer %d", a.Buffer.Size())
				}
				a.Buffer.Close()
				res.ok++
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	for range 2 {
		if err := testutil.UnloadModule("vkms"); err != nil {
			t.Fatal(err)
		}
		if err := r.Refresh(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if err := testutil.LoadModule(ko, params); err != nil {
			t.Fatal(err)
		}
		if err := r.Refresh(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	var total result
	for range 4 {
		x := <-results
		total.ok += x.ok
		total.failed += x.failed
	}
	t.Logf("%d allocations succeeded, %d failed cleanly while vkms came and went", total.ok, total.failed)
	if total.ok == 0 {
		t.Error("no allocation succeeded at all")
	}
	if _, err := r.Get("scanout/" + disp.Device); err != nil {
		t.Errorf("after the last reload: %v", err)
	}
}
