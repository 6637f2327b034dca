// Package dmabuf wraps one DMA-BUF file descriptor: its size, CPU mappings,
// CPU-access bracketing (DMA_BUF_IOCTL_SYNC), its debug name, sync_file
// import and export, and its fdinfo.
//
// A Buffer owns exactly one fd. It is either a kernel DMA-BUF (from a DMA-BUF
// heap, udmabuf or a DRM PRIME export) or an emulated buffer: a sealed memfd
// that behaves like a DMA-BUF for CPU use but that no device can import.
// Kind tells them apart and every user-facing rendering of an emulated
// buffer says so.
//
// Using a Buffer needs no privilege; whoever holds the fd may use it.
package dmabuf
