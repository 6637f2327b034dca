// Package heap is heapd's heap layer: one Heap interface over every way of
// getting DMA-BUF memory (kernel DMA-BUF heaps, udmabuf, the emulated memfd
// heap and, later, dumb buffers on a display device), and a Registry that
// discovers what the running system offers and publishes it under stable
// logical names:
//
//	system         non-contiguous memory: the kernel system heap, else
//	               udmabuf, else the emulated heap
//	contiguous     the CMA heap, whatever the running kernel calls it
//	udmabuf        memfd-backed DMA-BUFs through /dev/udmabuf
//	kernel/<name>  every kernel heap under its own name, aliases included
//
// docs/naming.md explains the scheme and why.
//
// The emulated heap is published (as system) only where no real backend
// exists, and its Info always says it is emulated, CPU only and not
// importable by any device.
//
// A Registry owns the kernel fds it opens (heap nodes, /dev/udmabuf) and
// closes them in Close. Buffers it returns are owned by the caller. A
// Registry is safe for concurrent use. Discovering needs read access to
// /dev/dma_heap and /sys; allocating needs read access to the heap node.
package heap
