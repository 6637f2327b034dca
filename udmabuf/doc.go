// Package udmabuf turns memfd memory into kernel DMA-BUFs through
// /dev/udmabuf (CONFIG_UDMABUF): UDMABUF_CREATE for one range and
// UDMABUF_CREATE_LIST for several. The result is a real DMA-BUF
// (dmabuf.KindKernel, exporter "udmabuf") that devices can import, backed by
// ordinary non-contiguous pages, with the CPU and the memfd seeing the same
// memory.
//
// The kernel wants memfds made with MFD_ALLOW_SEALING that carry
// F_SEAL_SHRINK and no write seal, and page-aligned offsets and sizes within
// a per-buffer limit (size_limit_mb, 64 MiB by default) and a per-list limit
// (list_limit, 1024 ranges). This package checks all of that before the
// ioctl so errors say what is wrong rather than a bare EINVAL.
//
// Privilege: read-write access to /dev/udmabuf. systemd's uaccess rules
// grant it to users logged in at a seat; elsewhere it is root-only unless a
// udev rule says otherwise.
package udmabuf
