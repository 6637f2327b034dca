package heap

import (
	"context"
	"errors"
	"fmt"

	"github.com/heapd/heapd/dmabuf"
)

// Backend names the mechanism behind a heap.
type Backend string

// Backends.
const (
	// BackendKernel is a kernel DMA-BUF heap (/dev/dma_heap/<name>).
	BackendKernel Backend = "kernel"
	// BackendUdmabuf turns sealed memfds into DMA-BUFs (/dev/udmabuf).
	BackendUdmabuf Backend = "udmabuf"
	// BackendEmulated is sealed memfds with no kernel DMA-BUF behind them:
	// CPU only, not importable by any device.
	BackendEmulated Backend = "emulated"
	// BackendDumb is dumb buffers on a display device's primary node,
	// exported with PRIME.
	BackendDumb Backend = "dumb"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrUnknownHeap means no heap has the requested name.
	ErrUnknownHeap = errors.New("heap: unknown heap")
	// ErrInvalidSize means a size was zero, negative or too large.
	ErrInvalidSize = errors.New("heap: invalid size")
	// ErrNoMemory means a heap cannot fit the request (see IsNoMemory for
	// the kernel's own out-of-memory errors).
	ErrNoMemory = errors.New("heap: out of memory")
	// ErrRetired means a heap existed but its device or backend went away
	// ("device gone"); the error names the device.
	ErrRetired = errors.New("heap: retired")
	// ErrClosed means the Registry was closed.
	ErrClosed = errors.New("heap: registry closed")
)

// Properties are what is known about a heap's memory.
type Properties struct {
	// Contiguous reports physically contiguous memory (CMA).
	Contiguous bool `json:"contiguous"`
	// CPUCached reports whether CPU mappings are cached; nil if unknown.
	CPUCached *bool `json:"cpu_cached,omitempty"`
	// MaxSize is the largest single allocation, 0 if no limit is known.
	MaxSize int64 `json:"max_size,omitempty"`
	// CMATotal and CMAFree come from /proc/meminfo for contiguous heaps.
	CMATotal int64 `json:"cma_total,omitempty"`
	CMAFree  int64 `json:"cma_free,omitempty"`
	// DeviceImportable is false for emulated memory: no device can import it.
	DeviceImportable bool `json:"device_importable"`
}

// Info describes one published heap.
type Info struct {
	// Name is the logical name clients use ("system", "kernel/reserved").
	Name string `json:"name"`
	// Backend is the mechanism.
	Backend Backend `json:"backend"`
	// Target is what the name maps to: a device node, or "memfd".
	Target string `json:"target"`
	// KernelName is the kernel's own heap name for kernel heaps.
	KernelName string `json:"kernel_name,omitempty"`
	// Device is the display device id of a scanout heap.
	Device string `json:"device,omitempty"`
	Properties
	// Note explains the mapping in words (why this heap, or the emulated
	// label).
	Note string `json:"note,omitempty"`
}

// AllocOptions are optional allocation parameters; the zero value is valid.
type AllocOptions struct {
	// Name is the buffer's debug name (at most 31 bytes), visible in
	// fdinfo and debugfs. Empty leaves it unnamed.
	Name string
}

// Heap is one source of DMA-BUF memory.
//
// Implementations are safe for concurrent use. Alloc returns a Buffer owned
// by the caller, or an error and no fd.
type Heap interface {
	// Info describes the heap as published.
	Info() Info
	// Alloc allocates at least size bytes (rounded up to whole pages).
	Alloc(ctx context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error)
}

// checkSize validates a requested size against a heap's limits.
func checkSize(name string, size, maxSize int64) error {
	if size <= 0 {
		return fmt.Errorf("heap %s: size %d: must be at least 1 byte: %w", name, size, ErrInvalidSize)
	}
	if size > 1<<62 {
		return fmt.Errorf("heap %s: size %d: too large: %w", name, size, ErrInvalidSize)
	}
	if maxSize > 0 && size > maxSize {
		return fmt.Errorf("heap %s: size %d exceeds this heap's limit of %d bytes: %w", name, size, maxSize, ErrInvalidSize)
	}
	return nil
}
