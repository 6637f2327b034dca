package dmaheap

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
)

var _ io.Closer = (*Heap)(nil)

// Heap is an open DMA-BUF heap node. It owns one fd (opened
// O_RDONLY|O_CLOEXEC).
//
// A Heap is safe for concurrent use: any number of Alloc calls may run at
// once. Close is idempotent and nil-safe and never waits: an Alloc already
// in the kernel finishes with the fd, which is closed when the last such call
// returns; later calls return ErrClosed. If a Heap becomes unreachable
// without Close, a cleanup closes its fd and the leak is counted (tests fail
// on it): always Close.
type Heap struct {
	name    string
	path    string
	backing Backing
	cfg     Config

	mu      sync.Mutex
	fd      int // -1 once released
	users   int // calls using fd right now
	closed  bool
	cleanup runtime.Cleanup
}

// Open opens the named heap of the running kernel (/dev/dma_heap/<name>)
// and returns a Heap that owns the new fd; the caller must Close it. It is
// (*Config)(nil).Open; see Config.Open for the errors. Safe for concurrent
// use.
func Open(name string) (*Heap, error) { return (*Config)(nil).Open(name) }

// newHeap wraps fd, which it owns from now on.
func (c *Config) newHeap(name, path string, fd int) *Heap {
	h := &Heap{name: name, path: path, fd: fd}
	if c != nil {
		h.cfg = *c
	}
	h.backing, _ = h.cfg.classifyNode(name, path)
	h.cleanup = runtime.AddCleanup(h, func(fd int) {
		leak.Collected("dmaheap")
		unix.Close(fd)
	}, fd)
	return h
}

// classifyNode classifies the heap behind a node, following a link in the
// heap directory to the heap it names.
func (c *Config) classifyNode(name, path string) (Backing, string) {
	if target, err := os.Readlink(path); err == nil {
		name = c.linkHeap(target)
	}
	return c.classify(name, c.readCmdline())
}

// Name returns the heap name given to Open ("" on a nil Heap).
func (h *Heap) Name() string {
	if h == nil {
		return ""
	}
	return h.name
}

// Path returns the node path that was opened ("" on a nil Heap).
func (h *Heap) Path() string {
	if h == nil {
		return ""
	}
	return h.path
}

// Backing returns what memory the heap hands out, decided as List does when
// the heap was opened (BackingUnknown on a nil Heap).
func (h *Heap) Backing() Backing {
	if h == nil {
		return BackingUnknown
	}
	return h.backing
}

// Contiguous reports whether the heap is known to hand out physically
// contiguous memory.
func (h *Heap) Contiguous() bool { return h.Backing() == BackingCMA }

// acquire returns the fd for one call, which must call release after.
func (h *Heap) acquire(op string) (int, error) {
	if h == nil {
		return -1, &Error{Op: op, Kind: ErrClosed, Err: fs.ErrClosed}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return -1, &Error{Op: op, Heap: h.name, Kind: ErrClosed, Err: fs.ErrClosed}
	}
	h.users++
	return h.fd, nil
}

func (h *Heap) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users--
	if h.closed && h.users == 0 && h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

// Close releases the heap's fd. Buffers allocated from the heap stay valid:
// each owns its own fd. Close is idempotent, safe on a nil Heap and safe
// concurrently with Alloc (see Heap).
func (h *Heap) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	h.cleanup.Stop()
	if h.users > 0 {
		return nil // the last call in flight closes it
	}
	err := unix.Close(h.fd)
	h.fd = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// String returns "dmaheap.Heap(name)".
func (h *Heap) String() string { return fmt.Sprintf("dmaheap.Heap(%s)", h.Name()) }

// validName rejects names that are not a single entry of the heap
// directory.
func validName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty heap name")
	case name == "." || name == "..", strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%q is not a heap name (a heap name is one entry of /dev/dma_heap, without slashes)", name)
	}
	return nil
}
