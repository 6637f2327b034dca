// Package dmaheap speaks the kernel's DMA-BUF heaps (/dev/dma_heap/<name>):
// it lists them, opens one and allocates DMA-BUFs from it, reads the CMA
// counters in /proc/meminfo, and resolves which heap, under whichever name the
// running kernel uses, gives physically contiguous (CMA) memory.
//
// # Listing
//
// List reads /dev/dma_heap and cross-checks every node with
// /sys/class/dma_heap/<name>/dev (a node whose major:minor differs is stale or
// hand-made). Symbolic links, such as the vidbuf_cached link Raspberry Pi OS
// adds with udev, are reported as aliases of their target. Each entry says
// who may open the node (owner, group, mode, and whether this process can)
// and what memory backs it, as far as user space can tell without
// allocating.
//
// # Which heaps are contiguous
//
// The kernel offers no attribute that says "this heap is CMA", so the
// package decides from the name and from what the kernel publishes about CMA
// areas, in this order:
//
//   - a symbolic link has the backing of its target (vidbuf_cached points at
//     system on a Raspberry Pi 5: not contiguous; at linux,cma on a Pi 4 and
//     older: contiguous);
//   - "system" and "system-uncached" are buddy-allocator pages: not
//     contiguous;
//   - "default_cma_region" (Linux 6.17 and later), "reserved" (the area from
//     cma= or CONFIG_CMA_SIZE_*), "linux,cma" and "default-pool" (device-tree
//     node names of the default area) are the default CMA area under its
//     current or legacy name;
//   - any other name is CMA when a CMA area of that name exists
//     (/sys/kernel/mm/cma/<name>, CONFIG_CMA_SYSFS), or when the device tree
//     has a reserved-memory node of that name that is compatible with
//     "shared-dma-pool" and "reusable" — exactly the regions for which Linux
//     6.19 and later create a per-region CMA heap;
//   - anything else (vendor heaps) is unknown, and never chosen as
//     contiguous.
//
// ResolveCMA applies these rules to a listing, picks one heap and explains
// the choice and everything it passed over.
//
// # Allocating
//
// Open opens a heap node read-only (read permission suffices for
// DMA_HEAP_IOCTL_ALLOC); Heap.Alloc returns a *dmabuf.Buffer opened
// O_RDWR|O_CLOEXEC whose size is the page-rounded size the kernel reports.
// Errors are *Error values that say what to do, and match the sentinels
// (ErrNotExist, ErrPermission, ErrNoMemory, ErrInvalidSize, ErrClosed) as
// well as the underlying errno or fs error with errors.Is.
//
// # Privilege
//
// Listing and reading /proc/meminfo need no privilege. Opening a heap needs
// read permission on its node: root only by default (root:root 0600), a group
// such as video where a udev rule grants it. Unprivileged programs are meant
// to allocate through the heapd daemon instead.
//
// # Paths
//
// Every path is taken from a Config (nil means the real /dev, /sys and
// /proc), so tests and tools can run over a captured tree.
package dmaheap
