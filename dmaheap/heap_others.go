//go:build !linux

package dmaheap

import (
	"runtime"

	"github.com/heapd/heapd/dmabuf"
)

// Open fails with ErrNotSupported: DMA-BUF heaps exist only on Linux.
func (c *Config) Open(name string) (*Heap, error) {
	return nil, &Error{Op: "open", Heap: name, Kind: ErrNotSupported, Detail: "DMA-BUF heaps are not implemented on " + runtime.GOOS}
}

// Alloc fails with ErrNotSupported: DMA-BUF heaps exist only on Linux.
func (h *Heap) Alloc(size int64) (*dmabuf.Buffer, error) {
	return nil, &Error{Op: "alloc", Heap: h.Name(), Kind: ErrNotSupported, Detail: "DMA-BUF heaps are not implemented on " + runtime.GOOS}
}
