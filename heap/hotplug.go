package heap

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/heapd/heapd/internal/uevent"
)

// ChangeKind says whether a heap appeared or went away.
type ChangeKind int

// Change kinds.
const (
	// Published: a heap name appeared (a device was added, or a backend
	// became usable).
	Published ChangeKind = iota + 1
	// Retired: a heap name went away; allocations from it now fail with
	// ErrRetired naming the reason.
	Retired
)

func (k ChangeKind) String() string {
	switch k {
	case Published:
		return "published"
	case Retired:
		return "retired"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// Change is one difference between two publications.
type Change struct {
	Kind ChangeKind `json:"kind"`
	Heap string     `json:"heap"`
	// Reason says why in words ("display device platform-vkms (vkms) was
	// removed").
	Reason string `json:"reason"`
}

// retireLocked compares the new publication with the current one, records
// retired names with their reason and returns the changes, sorted by name.
// r.mu is held.
func (r *Registry) retireLocked(next map[string]Heap, found *Found, now time.Time) []Change {
	if r.heaps == nil { // first publication (Open): nothing to compare
		r.retired = map[string]string{}
		return nil
	}
	present := map[string]bool{}
	for _, d := range found.Devices {
		present[d.Info().ID] = true
	}
	var changes []Change
	for name, h := range r.heaps {
		if _, ok := next[name]; ok {
			continue
		}
		why := "its backend is no longer available"
		if dev := h.Info().Device; dev != "" {
			if present[dev] {
				why = fmt.Sprintf("display device %s no longer passes the scanout probe", dev)
			} else {
				why = fmt.Sprintf("display device %s (%s) went away at %s", dev, r.driverOf(dev), now.Format(time.RFC3339))
			}
		}
		r.retired[name] = why
		changes = append(changes, Change{Kind: Retired, Heap: name, Reason: why})
	}
	for name, h := range next {
		if _, ok := r.heaps[name]; ok {
			continue
		}
		delete(r.retired, name)
		why := "backend available"
		if dev := h.Info().Device; dev != "" {
			why = fmt.Sprintf("display device %s resolved", dev)
		}
		changes = append(changes, Change{Kind: Published, Heap: name, Reason: why})
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Heap < changes[j].Heap })
	return changes
}

// driverOf names the driver of a device of the current publication.
func (r *Registry) driverOf(id string) string {
	for _, d := range r.found.Devices {
		if info := d.Info(); info.ID == id {
			return info.Driver
		}
	}
	return "unknown driver"
}

// Follow refreshes the registry whenever a relevant device event arrives
// from l (DRM card/render nodes, DMA-BUF heaps, udmabuf), coalescing bursts
// within settle (100 ms when zero). It returns when ctx is done or l fails;
// it does not close l. Retired heaps answer with ErrRetired naming the
// device; Config.OnChange hears every change. Safe to run once per
// Registry alongside any other use.
func (r *Registry) Follow(ctx context.Context, l *uevent.Listener, settle time.Duration) error {
	if settle <= 0 {
		settle = 100 * time.Millisecond
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-l.Events():
			if !ok {
				return l.Err()
			}
			r.log.Debug("device event", "action", ev.Action, "subsystem", ev.Subsystem, "dev", ev.DevName)
			if timer == nil {
				timer = time.After(settle)
			}
		case <-timer:
			timer = nil
			if err := r.Refresh(); err != nil {
				r.log.Error("refresh after device event failed", "err", err)
			}
		}
	}
}
