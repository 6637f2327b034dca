package dmaheap

import (
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/uapi"
)

// Open opens DevDir/dma_heap/<name> with O_RDONLY|O_CLOEXEC and returns a
// Heap that owns the fd; the caller must Close it. name may be an alias
// (vidbuf_cached). Errors are *Error values: ErrNotExist names the kernel
// option the heap needs and lists the heaps that do exist; ErrPermission
// names the node, its owner, group and mode, and the fixes. Safe for
// concurrent use.
func (c *Config) Open(name string) (*Heap, error) {
	if err := validName(name); err != nil {
		return nil, &Error{Op: "open", Heap: name, Kind: ErrNotExist, Err: err}
	}
	path := c.nodePath(name)
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, c.openError(name, path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &Error{Op: "open", Heap: name, Err: os.NewSyscallError("fstat", err)}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFCHR:
	case st.Mode&unix.S_IFMT == unix.S_IFREG && c.regularNodes():
	default:
		unix.Close(fd)
		return nil, &Error{Op: "open", Heap: name, Kind: ErrNotExist,
			Err: fmt.Errorf("%s is not a character device", path), Detail: "not a DMA-BUF heap node"}
	}
	return c.newHeap(name, path, fd), nil
}

// allocFDFlags are the flags of every buffer fd: read-write, so that a
// shared writable mapping works, and close-on-exec.
const allocFDFlags = unix.O_RDWR | unix.O_CLOEXEC

// Alloc allocates a DMA-BUF of at least size bytes (DMA_HEAP_IOCTL_ALLOC with
// fd_flags O_RDWR|O_CLOEXEC and heap_flags 0) and returns it as a Buffer the
// caller owns and must Close. The kernel rounds size up to whole pages;
// Buffer.Size reports the real size. A size that is not positive, or that
// cannot be rounded up to whole pages within this process's address space,
// is ErrInvalidSize and never reaches the kernel. ErrNoMemory when the heap
// is exhausted (for a CMA heap the error reports CmaFree and CmaTotal);
// ErrClosed after Close or on a nil Heap. On error no fd is left open. Safe
// for concurrent use.
func (h *Heap) Alloc(size int64) (*dmabuf.Buffer, error) {
	if err := checkSize(size); err != nil {
		return nil, &Error{Op: "alloc", Heap: h.Name(), Kind: ErrInvalidSize, Err: unix.EINVAL, Detail: err.Error()}
	}
	fd, err := h.acquire("alloc")
	if err != nil {
		return nil, err
	}
	defer h.release()
	a := uapi.DMAHeapAllocationData{Len: uint64(size), FDFlags: allocFDFlags}
	for {
		err = uapi.DMAHeapAlloc(fd, &a)
		if !errors.Is(err, unix.EINTR) {
			break
		}
		a.FD = 0
	}
	if err != nil {
		return nil, h.allocError(size, err)
	}
	buf, err := dmabuf.New(int(a.FD))
	if err != nil {
		unix.Close(int(a.FD))
		return nil, &Error{Op: "alloc", Heap: h.name, Err: err, Detail: "the heap returned an fd that is not a DMA-BUF"}
	}
	return buf, nil
}

// checkSize validates an allocation size before the kernel sees it.
func checkSize(size int64) error {
	if size <= 0 {
		return fmt.Errorf("size %d: an allocation needs a positive size", size)
	}
	page := int64(os.Getpagesize())
	if size > int64(math.MaxInt)-(page-1) {
		return fmt.Errorf("size %d cannot be rounded up to whole %d-byte pages in this address space", size, page)
	}
	return nil
}

// allocError explains a failed DMA_HEAP_IOCTL_ALLOC.
func (h *Heap) allocError(size int64, err error) error {
	e := &Error{Op: "alloc", Heap: h.name, Err: err}
	switch {
	case errors.Is(err, unix.ENOMEM):
		e.Kind = ErrNoMemory
		e.Detail = h.noMemoryDetail(size)
	case errors.Is(err, unix.ENOTTY):
		e.Detail = fmt.Sprintf("%s does not answer DMA_HEAP_IOCTL_ALLOC: not a DMA-BUF heap node", h.path)
	case errors.Is(err, unix.EINVAL):
		e.Detail = fmt.Sprintf("the kernel rejected %d bytes with fd_flags O_RDWR|O_CLOEXEC and heap_flags 0", size)
	}
	return e
}

func (h *Heap) noMemoryDetail(size int64) string {
	if h.backing != BackingCMA {
		return fmt.Sprintf("the kernel could not find %s for heap %q: free memory or allocate less", fmtSize(size), h.name)
	}
	stats := "CmaFree/CmaTotal unknown"
	if s, err := h.cfg.MemInfo(); err != nil {
		stats += " (" + err.Error() + ")"
	} else {
		stats = s.String()
	}
	return fmt.Sprintf("the CMA area behind heap %q is exhausted or too fragmented for %s of contiguous memory (%s): free buffers, allocate less, or reserve a larger area (cma=<size> on the kernel command line, or a larger reusable reserved-memory region)",
		h.name, fmtSize(size), stats)
}
