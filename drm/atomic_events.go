package drm

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// EventType is the kind of a DRM event (DRM_EVENT_*).
type EventType uint32

// Event types, with the kernel's values.
const (
	// EventVBlank answers a vblank wait (WAIT_VBLANK with an event).
	EventVBlank EventType = uapi.DRMEventVBlank
	// EventFlipComplete says a commit with AtomicPageFlipEvent (or a
	// legacy page flip) is on screen, one per CRTC.
	EventFlipComplete EventType = uapi.DRMEventFlipComplete
	// EventCRTCSequence answers CRTC_QUEUE_SEQUENCE.
	EventCRTCSequence EventType = uapi.DRMEventCRTCSequence
)

// String returns "vblank", "flip-complete" or "crtc-sequence".
func (t EventType) String() string {
	switch t {
	case EventVBlank:
		return "vblank"
	case EventFlipComplete:
		return "flip-complete"
	case EventCRTCSequence:
		return "crtc-sequence"
	}
	return fmt.Sprintf("EventType(%#x)", uint32(t))
}

// Event is one event read from a DRM fd.
type Event struct {
	Type EventType
	// UserData is the commit's AtomicRequest.UserData.
	UserData uint64
	// CRTCID is the CRTC the event is about (0 from kernels before 4.12
	// and for EventCRTCSequence).
	CRTCID uint32
	// Sequence is the CRTC's vblank counter at the event.
	Sequence uint64
	// Time is the kernel's timestamp of that vblank on CLOCK_MONOTONIC,
	// as time since boot (microsecond resolution for vblank and flip
	// events).
	Time time.Duration
}

// eventFromUAPI converts a decoded kernel event.
func eventFromUAPI(e uapi.DRMEvent) Event {
	ev := Event{Type: EventType(e.Type), UserData: e.UserData, CRTCID: e.CRTCID, Sequence: e.Sequence}
	if ev.Type == EventCRTCSequence {
		ev.Time = time.Duration(e.TimeNS)
	} else {
		ev.Time = time.Duration(e.Sec)*time.Second + time.Duration(e.Usec)*time.Microsecond
	}
	return ev
}

// ParseEvents decodes the bytes one read(2) of a DRM fd returned: whole
// events in host byte order. Events before a malformed one are returned
// with the error. A pure function, safe for concurrent use.
func ParseEvents(b []byte) ([]Event, error) {
	raw, err := uapi.DRMParseEvents(b)
	out := make([]Event, len(raw))
	for i, e := range raw {
		out[i] = eventFromUAPI(e)
	}
	if err != nil {
		return out, fmt.Errorf("drm: %w", err)
	}
	return out, nil
}

// EventReader reads the events the kernel queues on a Device's fd
// (flip-complete events of commits with AtomicPageFlipEvent, vblank
// events). It holds a duplicate of the Device's fd, because waiting for
// events must not hold the Device's lock: the kernel keeps the DRM file,
// with its framebuffers and DRM master, until both the Device and the
// EventReader are closed, so Close the EventReader first.
//
// Read may be called from several goroutines (they take turns); Close may
// run concurrently with a Read, which then returns ErrClosed. Close is
// idempotent and nil-safe. An EventReader dropped without Close is closed
// by a cleanup and the leak is counted (tests fail on it).
type EventReader struct {
	f       *os.File
	closed  atomic.Bool
	cleanup runtime.Cleanup

	mu    sync.Mutex // serialises Read; Close never takes it
	buf   []byte
	queue []Event
}

// Events returns a new EventReader for the Device; the caller must Close
// it. It sets O_NONBLOCK on the Device's open file (shared with the
// duplicate), which changes nothing for ioctls. Safe for concurrent use.
func (d *Device) Events() (*EventReader, error) {
	if d == nil {
		return nil, ErrClosed
	}
	nfd := -1
	err := d.locked(func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("drm: Events on %s: %w", d, err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("drm: Events on %s: %w", d, os.NewSyscallError("fcntl", err))
	}
	f := os.NewFile(uintptr(nfd), d.path)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("drm: Events on %s: the fd cannot be polled: %w (%w)", d, ErrNotSupported, err)
	}
	r := &EventReader{f: f, buf: make([]byte, uapi.DRMEventReadBufferLen)}
	r.cleanup = runtime.AddCleanup(r, func(f *os.File) {
		leak.Collected("drm event reader")
		f.Close()
	}, f)
	return r, nil
}

// Read returns the next event, waiting for one until ctx is done (then it
// returns ctx's error). ErrClosed after (or during) Close, or on nil.
func (r *EventReader) Read(ctx context.Context) (Event, error) {
	if r == nil || r.closed.Load() {
		return Event{}, ErrClosed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.queue) == 0 {
		if err := ctx.Err(); err != nil {
			return Event{}, fmt.Errorf("drm: reading events: %w", err)
		}
		stop := deadlineFromContext(ctx, r.f)
		n, err := r.f.Read(r.buf)
		stop()
		if err != nil {
			return Event{}, fmt.Errorf("drm: reading events: %w", waitErr(ctx, err, r.closed.Load()))
		}
		evs, err := ParseEvents(r.buf[:n])
		r.queue = append(r.queue, evs...)
		if err != nil && len(r.queue) == 0 {
			return Event{}, err
		}
	}
	e := r.queue[0]
	r.queue = r.queue[1:]
	return e, nil
}

// Close closes the duplicate fd. Idempotent and nil-safe.
func (r *EventReader) Close() error {
	if r == nil || !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	r.cleanup.Stop()
	return r.f.Close()
}
