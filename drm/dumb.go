package drm

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// DumbBuffer is a dumb buffer (CREATE_DUMB) of a primary node: CPU-mappable
// memory the display can scan out, allocated the way the driver allocates
// scanout memory (physically contiguous on a display without IOMMU).
//
// Its geometry fields are read-only. Close destroys it (see Handle.Close);
// it is idempotent, nil-safe and safe for concurrent use.
type DumbBuffer struct {
	// Width, Height and BPP are what was asked for; Pitch (bytes per row)
	// and Size (bytes) are what the driver chose.
	Width, Height, BPP uint32
	Pitch              uint32
	Size               uint64

	h *Handle
}

// CreateDumb allocates a dumb buffer of width × height pixels of bpp bits on
// a primary node. It does not consult Caps.DumbBuffer (vgem answers that
// with an error yet creates dumb buffers).
//
// Errors: ErrNeedPrimary on a render node; ErrNotSupported (with ENOSYS)
// when the driver has no dumb buffers; the kernel's errno otherwise
// (EINVAL for a zero or overflowing size). Safe for concurrent use.
func (d *Device) CreateDumb(width, height, bpp uint32) (*DumbBuffer, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if err := d.needPrimary("CreateDumb"); err != nil {
		return nil, err
	}
	var b *DumbBuffer
	err := d.locked(func(fd int) error {
		c := uapi.DRMModeCreateDumb{Width: width, Height: height, BPP: bpp}
		if err := uapi.DRMModeCreateDumbCall(fd, &c); err != nil {
			return err
		}
		d.acquire(c.Handle, true)
		b = &DumbBuffer{Width: width, Height: height, BPP: bpp, Pitch: c.Pitch, Size: c.Size, h: d.newHandle(c.Handle)}
		return nil
	})
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("drm: CreateDumb(%dx%d@%d) on %s: driver has no dumb buffers: %w (%w)", width, height, bpp, d, ErrNotSupported, err)
		}
		return nil, fmt.Errorf("drm: CreateDumb(%dx%d@%d) on %s: %w", width, height, bpp, d, err)
	}
	return b, nil
}

// Handle returns the buffer's GEM handle reference, owned by b (do not
// Close it; Close b). Use it with AddFB2 or Export. Nil on nil.
func (b *DumbBuffer) Handle() *Handle {
	if b == nil {
		return nil
	}
	return b.h
}

// Close destroys the dumb buffer's handle (DESTROY_DUMB once no other
// reference to the same GEM handle remains). Mappings, framebuffers and
// exported DMA-BUFs keep the memory alive. Idempotent and nil-safe.
func (b *DumbBuffer) Close() error {
	if b == nil {
		return nil
	}
	return b.h.Close()
}

// Export exports the dumb buffer as a DMA-BUF the caller owns (see
// Device.Export).
func (b *DumbBuffer) Export() (*dmabuf.Buffer, error) {
	if b == nil {
		return nil, ErrClosed
	}
	return b.h.dev.Export(b.h)
}

// Map maps the whole dumb buffer read-write (MAP_DUMB, then mmap of the
// device fd) and returns a Mapping the caller must Close. Dumb buffers need
// no CPU-access bracketing. Safe for concurrent use.
func (b *DumbBuffer) Map() (*Mapping, error) {
	if b == nil {
		return nil, ErrClosed
	}
	d := b.h.dev
	if err := d.check(b.h); err != nil {
		return nil, err
	}
	if b.Size > math.MaxInt {
		return nil, fmt.Errorf("drm: Map of a %d-byte dumb buffer: too large for this address space: %w", b.Size, ErrNotSupported)
	}
	var data []byte
	err := d.locked(func(fd int) error {
		off, err := uapi.DRMModeMapDumbCall(fd, b.h.id)
		if err != nil {
			return err
		}
		if off > math.MaxInt64 {
			return fmt.Errorf("mmap offset %#x out of range: %w", off, unix.EINVAL)
		}
		data, err = unix.Mmap(fd, int64(off), int(b.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return os.NewSyscallError("mmap", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("drm: Map of dumb buffer %d on %s: %w", b.h.id, d, err)
	}
	return newMapping(data), nil
}

// AllocateDumb allocates size bytes (rounded up by the driver, at least to
// whole pages) as a dumb buffer on the primary node d, exports it and
// returns the DMA-BUF, which the caller owns and must Close; the dumb
// buffer's handle is released before returning (the DMA-BUF keeps the
// memory). The buffer is laid out as 1024-pixel rows of 32 bits, so its
// Size is a multiple of 4096 bytes.
//
// This is the "dumb buffer on display device X" allocator: memory the
// display allocates for itself, which it can always scan out. Errors are
// those of CreateDumb and Export; size <= 0 or too large for 32-bit rows is
// ErrBadLayout. Safe for concurrent use.
func AllocateDumb(d *Device, size int64) (*dmabuf.Buffer, error) {
	const width, bpp, pitch = 1024, 32, 4096
	if size <= 0 || (size+pitch-1)/pitch > math.MaxUint32 {
		return nil, fmt.Errorf("drm: AllocateDumb(%d) on %s: %w", size, d, ErrBadLayout)
	}
	b, err := d.CreateDumb(width, uint32((size+pitch-1)/pitch), bpp)
	if err != nil {
		return nil, err
	}
	buf, err := b.Export()
	if err = errors.Join(err, b.Close()); err != nil {
		buf.Close()
		return nil, err
	}
	return buf, nil
}

// Mapping is a shared CPU mapping of a dumb buffer. It owns no fd and
// stays valid after the DumbBuffer and the Device are closed.
//
// Close is idempotent, nil-safe and safe for concurrent use; touching
// Bytes after Close crashes the program. A Mapping dropped without Close is
// unmapped by a cleanup and the leak is counted (tests fail on it).
type Mapping struct {
	mu      sync.Mutex
	data    []byte
	cleanup runtime.Cleanup
}

func newMapping(data []byte) *Mapping {
	m := &Mapping{data: data}
	m.cleanup = runtime.AddCleanup(m, func(data []byte) {
		leak.Collected("drm mapping")
		_ = unix.Munmap(data)
	}, data)
	return m
}

// Bytes returns the mapped memory, valid until Close; nil after Close or on
// nil.
func (m *Mapping) Bytes() []byte {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data
}

// Close unmaps the memory. Idempotent and nil-safe.
func (m *Mapping) Close() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		return nil
	}
	m.cleanup.Stop()
	err := unix.Munmap(m.data)
	m.data = nil
	if err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}
