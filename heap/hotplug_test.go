package heap

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/dmabuf"

	"github.com/heapd/heapd/internal/testutil"
)

func TestRetireAndReturnOfADisplay(t *testing.T) {
	testutil.CheckFDs(t)
	gpu := display("platform-gpu", "vc4", false, "cma")
	usb := display("usb-0:1", "gud", true, "system")
	var mu sync.Mutex
	devices := []Device{gpu, usb}
	discover := func(*Config) (Found, error) {
		mu.Lock()
		defer mu.Unlock()
		return vmLike(devices...), nil
	}
	var changes []Change
	r, err := Open(&Config{Discover: discover, OnChange: func(c []Change) { changes = append(changes, c...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	def, _ := r.Get("scanout")
	if def.Info().Device != "platform-gpu" {
		t.Fatalf("default display %s, want platform-gpu (first by id)", def.Info().Device)
	}
	buf, err := r.Alloc(context.Background(), "scanout/platform-gpu", 4096, AllocOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()

	// The display goes away.
	mu.Lock()
	devices = []Device{usb}
	mu.Unlock()
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	_, err = r.Alloc(context.Background(), "scanout/platform-gpu", 4096, AllocOptions{})
	if !errors.Is(err, ErrRetired) || !strings.Contains(err.Error(), "display device platform-gpu (vc4) went away") {
		t.Errorf("allocation from a removed display: %v, want ErrRetired naming the device", err)
	}
	if def, _ := r.Get("scanout"); def == nil || def.Info().Device != "usb-0:1" {
		t.Errorf("default scanout did not move to the remaining display: %v", def)
	}
	// Buffers already handed out stay valid.
	if m, err := buf.Map(dmabuf.ProtReadWrite); err != nil {
		t.Errorf("old buffer no longer maps: %v", err)
	} else {
		m.Close()
	}

	// It comes back.
	mu.Lock()
	devices = []Device{gpu, usb}
	mu.Unlock()
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("scanout/platform-gpu"); err != nil {
		t.Errorf("display back but heap not republished: %v", err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.Kind.String()+" "+c.Heap)
	}
	want := []string{"retired scanout/platform-gpu", "published scanout/platform-gpu"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}
