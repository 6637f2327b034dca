// Package emulated is heapd's embedded-default heap: buffers backed by
// sealed memfds that behave like DMA-BUFs for CPU use (size, mmap, a name,
// fdinfo) on machines with no DMA-BUF heap, no udmabuf and no DRM.
//
// Emulated buffers are "emulated, CPU only, not importable by any device"
// (dmabuf.EmulatedLabel): no device can import them, CPU-access bracketing
// is a no-op because the memory is ordinary coherent CPU memory, and they
// have no fences. Every place that describes one says so; nothing may pass
// one off as a device buffer.
//
// A buffer is a memfd named dmabuf.EmulatedNamePrefix+name, sized to whole
// pages and sealed against shrinking, growing and further sealing
// (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL), which is how dmabuf.New
// recognises it. It is zero-filled by construction. Its memory is charged to
// the memory cgroup of whoever first touches a page.
//
// Allocating needs no privilege.
package emulated
