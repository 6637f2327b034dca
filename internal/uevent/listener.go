package uevent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Mechanism is how a Listener learns about devices.
type Mechanism int

const (
	// Auto picks Netlink when uevents reach this process and Inotify
	// otherwise; see Open for the rule.
	Auto Mechanism = iota
	// Netlink reads the kernel's uevents from a NETLINK_KOBJECT_UEVENT
	// socket (multicast group 1).
	Netlink
	// Inotify watches /dev/dri, /dev/dma_heap and /dev for nodes that
	// appear and disappear, and synthesizes add and remove events.
	Inotify
)

// String returns "auto", "netlink" or "inotify".
func (m Mechanism) String() string {
	switch m {
	case Auto:
		return "auto"
	case Netlink:
		return "netlink"
	case Inotify:
		return "inotify"
	}
	return fmt.Sprintf("Mechanism(%d)", int(m))
}

// Defaults of Config.
const (
	// DefaultReceiveBuffer is the netlink socket's requested receive
	// buffer. Every uevent of the system lands there, not only the ones
	// the Filter keeps: a module load or a `udevadm trigger` sends
	// thousands. The kernel grants it with CAP_NET_ADMIN (SO_RCVBUFFORCE);
	// otherwise SO_RCVBUF caps it at net.core.rmem_max.
	DefaultReceiveBuffer = 4 << 20
	// DefaultDevDir and DefaultSysDir are where the inotify fallback
	// looks.
	DefaultDevDir = "/dev"
	DefaultSysDir = "/sys"
)

// backlog is how many filtered events wait in the Events channel; beyond
// it the socket's receive buffer queues, and then the kernel drops and
// reports ENOBUFS (ActionOverflow).
const backlog = 16

// Config configures Open. A nil *Config and the zero Config mean the
// defaults. Open does not keep a reference to it.
type Config struct {
	// Mechanism selects the source; Auto (the zero value) picks one.
	Mechanism Mechanism
	// Filter keeps the events it returns true for; nil means Relevant. It
	// runs on the Listener's goroutine, one event at a time, and must not
	// block. ActionOverflow events bypass it.
	Filter func(Event) bool
	// ReceiveBuffer is the netlink receive buffer to request, in bytes;
	// 0 means DefaultReceiveBuffer.
	ReceiveBuffer int
	// DevDir is the /dev the inotify fallback watches, and SysDir the
	// /sys where it looks up DEVPATH; "" means DefaultDevDir and
	// DefaultSysDir. Tests point them at a temporary tree.
	DevDir, SysDir string
}

// Sentinel errors. Test with errors.Is.
var (
	// ErrClosed is returned by Next once the Listener is closed.
	ErrClosed = errors.New("uevent: listener closed")
	// ErrNotSupported means neither uevents nor inotify exist here (an
	// operating system other than Linux).
	ErrNotSupported = errors.New("uevent: not supported")
)

// Stats counts what a Listener read. The counters only grow.
type Stats struct {
	// Received counts netlink messages and inotify records read.
	Received uint64
	// Delivered counts events handed to the consumer, overflows included.
	Delivered uint64
	// Filtered counts valid events the Filter dropped.
	Filtered uint64
	// NotKernel counts netlink messages dropped because the kernel did
	// not send them (sender port id not 0): forgeries from user space,
	// unicast or multicast, and udev's own messages.
	NotKernel uint64
	// Malformed counts messages from the kernel that Parse rejected or
	// that did not fit the receive buffer.
	Malformed uint64
	// Overflows counts the times events were lost (ENOBUFS or
	// IN_Q_OVERFLOW); each produced one ActionOverflow event.
	Overflows uint64
}

// counters are the live Stats.
type counters struct {
	received, delivered, filtered, notKernel, malformed, overflows atomic.Uint64
}

// source is one mechanism. next blocks until it has read something and
// appends the events it got (possibly none: a dropped message) to dst. It
// returns an error once close was called or when reading failed for good.
// close makes a blocked next return; it is called once.
type source interface {
	next(dst []Event, c *counters) ([]Event, error)
	close() error
	mechanism() Mechanism
	String() string
}

// Listener delivers device events from the kernel (or the inotify
// fallback) to one consumer, either through the Events channel or through
// Next — use one of the two.
//
// A Listener owns one socket or inotify fd and one goroutine, both
// released by Close. Open the Listener before scanning the devices that
// already exist, so that nothing is lost between the scan and the first
// event. Its methods are safe for concurrent use. A nil *Listener behaves
// as a closed one.
type Listener struct {
	src    source
	filter func(Event) bool
	events chan Event
	done   chan struct{}
	wg     sync.WaitGroup

	closeOnce sync.Once

	mu  sync.Mutex
	err error // why the goroutine stopped, other than Close

	c counters
}

// Open starts a Listener. cfg may be nil.
//
// With Mechanism Auto it uses netlink unless uevents cannot arrive: when
// the network namespace belongs to a user namespace other than the initial
// one (a rootless container; since Linux 4.18 the kernel sends device
// uevents only to network namespaces of the initial user namespace), or
// when the socket cannot be created or bound (seccomp, a kernel without
// CONFIG_NET). It then falls back to inotify, and String says why. Network
// namespaces of the initial user namespace (`ip netns`, `unshare -n` as
// root, rootful containers) do receive uevents. A container whose /dev is
// a private tmpfs sees neither: its nodes never change.
//
// Open needs no privilege (binding to the kernel's uevent group is open to
// every user); CAP_NET_ADMIN only lets it enlarge the receive buffer past
// net.core.rmem_max. The caller owns the Listener and must Close it.
func Open(cfg *Config) (*Listener, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.ReceiveBuffer == 0 {
		c.ReceiveBuffer = DefaultReceiveBuffer
	}
	if c.DevDir == "" {
		c.DevDir = DefaultDevDir
	}
	if c.SysDir == "" {
		c.SysDir = DefaultSysDir
	}
	if c.Filter == nil {
		c.Filter = Relevant
	}
	if c.ReceiveBuffer < 0 {
		return nil, fmt.Errorf("uevent: negative receive buffer %d", c.ReceiveBuffer)
	}
	src, err := openSource(&c)
	if err != nil {
		return nil, err
	}
	l := &Listener{
		src:    src,
		filter: c.Filter,
		events: make(chan Event, backlog),
		done:   make(chan struct{}),
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

func (l *Listener) run() {
	defer l.wg.Done()
	defer close(l.events)
	var batch []Event
	for {
		var err error
		batch, err = l.src.next(batch[:0], &l.c)
		if err != nil {
			select {
			case <-l.done: // Close made next fail: not an error
			default:
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
			}
			return
		}
		for i, ev := range batch {
			batch[i] = Event{} // drop the reference to Env
			if ev.Action != ActionOverflow && !l.filter(ev) {
				l.c.filtered.Add(1)
				continue
			}
			// Counted before the send: a consumer that has the event
			// must see it in Stats.
			l.c.delivered.Add(1)
			select {
			case l.events <- ev:
			case <-l.done:
				l.c.delivered.Add(^uint64(0)) // not handed over after all
				return
			}
		}
	}
}

// Mechanism reports the mechanism in use: Netlink or Inotify.
func (l *Listener) Mechanism() Mechanism {
	if l == nil {
		return Auto
	}
	return l.src.mechanism()
}

// String describes the mechanism in use and, for a fallback, why: fit for
// a start-up log line, for example
//
//	netlink uevents (kernel multicast group 1, port 1234, receive buffer 8388608 bytes)
//	inotify on /dev/dri, /dev/dma_heap and /dev (no uevents: …)
func (l *Listener) String() string {
	if l == nil {
		return "uevent listener (nil)"
	}
	return l.src.String()
}

// Events returns the channel the Listener delivers events on. It is closed
// when the Listener stops: after Close (a receive may still yield events
// queued before it), or after a read error (see Err). Events of a nil
// Listener is a closed channel.
func (l *Listener) Events() <-chan Event {
	if l == nil {
		c := make(chan Event)
		close(c)
		return c
	}
	return l.events
}

// Next waits for the next event. It returns ctx.Err() when ctx ends first,
// ErrClosed once the Listener is closed (events still queued are
// discarded), and the error of Err when reading failed.
func (l *Listener) Next(ctx context.Context) (Event, error) {
	if l == nil {
		return Event{}, ErrClosed
	}
	select {
	case <-l.done:
		return Event{}, ErrClosed
	default:
	}
	select {
	case ev, ok := <-l.events:
		if ok {
			return ev, nil
		}
		if err := l.Err(); err != nil {
			return Event{}, err
		}
		return Event{}, ErrClosed
	case <-l.done:
		return Event{}, ErrClosed
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Err returns the error that stopped the Listener's goroutine, or nil while
// it runs and after a plain Close. Once it is not nil the Events channel is
// closed and the Listener should be closed and, if wanted, opened again.
func (l *Listener) Err() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats returns a snapshot of the counters. The fields are read one by one,
// so a snapshot taken while events arrive may be off by an event.
func (l *Listener) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	return Stats{
		Received:  l.c.received.Load(),
		Delivered: l.c.delivered.Load(),
		Filtered:  l.c.filtered.Load(),
		NotKernel: l.c.notKernel.Load(),
		Malformed: l.c.malformed.Load(),
		Overflows: l.c.overflows.Load(),
	}
}

// Close stops the goroutine, closes the socket or inotify fd and closes
// the Events channel; a Next or a channel receive blocked in another
// goroutine returns. Close waits for the goroutine to exit, never for the
// consumer. It is idempotent and nil-safe: later calls return nil.
func (l *Listener) Close() error {
	if l == nil {
		return nil
	}
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.src.close()
		l.wg.Wait()
	})
	return err
}
