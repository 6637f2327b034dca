// Package dmabuf wraps one DMA-BUF file descriptor: its size, CPU mappings,
// CPU-access bracketing (DMA_BUF_IOCTL_SYNC), its debug name, sync_file
// import and export, and its fdinfo.
//
// A Buffer owns exactly one fd. It is either a kernel DMA-BUF (from a DMA-BUF
// heap, udmabuf or a DRM PRIME export) or an emulated buffer: a sealed memfd
// (package emulated) that behaves like a DMA-BUF for CPU use but that no
// device can import. Kind tells them apart and every user-facing rendering
// of an emulated buffer says EmulatedLabel. On emulated buffers CPU-access
// bracketing is a no-op (the memory is coherent), while SetName and
// sync_file import/export return ErrNotSupported.
//
// Buffers and Mappings are safe for concurrent use. Close is idempotent and
// nil-safe and never waits for a call blocked in the kernel (a CPU-access
// start can wait on a device fence). Both carry a runtime cleanup that
// releases a forgotten fd or mapping and counts it as a leak for the tests.
// Errors wrap the package's sentinels (errors.Is) and the kernel's errno.
//
// Reopen opens an emulated buffer again as a new file of its own (not a
// duplicate fd), which the kernel counts separately; heapd's ledger uses it
// to follow an emulated buffer's lifetime.
//
// The fdinfo parser, ParseFDInfo, works on any process's
// /proc/<pid>/fdinfo/<fd> text.
//
// Using a Buffer needs no privilege; whoever holds the fd may use it.
package dmabuf
