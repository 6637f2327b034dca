package drm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// handleRef counts the references to one GEM handle of a Device. PRIME
// import returns the same handle for a buffer already imported on the same
// fd, and a dumb buffer exported and imported back is the same handle too,
// so a handle is closed only when its last reference goes.
type handleRef struct {
	refs int
	dumb bool // created by CREATE_DUMB: destroyed with DESTROY_DUMB
}

// acquire records one more reference to handle h; d.mu must be held.
func (d *Device) acquire(h uint32, dumb bool) {
	r := d.handles[h]
	if r == nil {
		r = &handleRef{dumb: dumb}
		d.handles[h] = r
	}
	r.refs++
}

// releaseLocked drops one reference to h and closes the handle when it was
// the last; d.mu must be held, so no import can hand out h in between.
func (d *Device) releaseLocked(fd int, h uint32) error {
	r := d.handles[h]
	if r == nil {
		return nil
	}
	if r.refs--; r.refs > 0 {
		return nil
	}
	delete(d.handles, h)
	if r.dumb {
		return uapi.DRMModeDestroyDumbCall(fd, h)
	}
	return uapi.DRMGemCloseCall(fd, h)
}

// release drops one reference to h; a no-op once the Device is closed (the
// kernel freed the handle with the fd).
func (d *Device) release(h uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	if err := d.releaseLocked(d.fd, h); err != nil {
		return fmt.Errorf("drm: closing handle %d on %s: %w", h, d, err)
	}
	return nil
}

// handleRefs returns the number of references to h (0 when the table has
// none). For tests.
func (d *Device) handleRefs(h uint32) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.handles[h]; r != nil {
		return r.refs
	}
	return 0
}

// handleCount returns the number of GEM handles in the table. For tests.
func (d *Device) handleCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.handles)
}

// Handle is one reference to a GEM handle (a buffer object) of a Device.
// Several Handles can share one GEM handle number: importing the same
// buffer twice gives two Handles with the same ID, and the GEM handle is
// closed when the last of them is closed.
//
// Close is idempotent, nil-safe and safe for concurrent use; a Handle
// dropped without Close is released by a cleanup and the leak is counted
// (tests fail on it). A Handle is only valid with the Device that made it.
type Handle struct {
	dev     *Device
	id      uint32
	closed  *atomic.Bool // shared with the cleanup
	cleanup runtime.Cleanup
}

// newHandle wraps one reference (already counted) to GEM handle id.
func (d *Device) newHandle(id uint32) *Handle {
	h := &Handle{dev: d, id: id, closed: new(atomic.Bool)}
	type arg struct {
		dev    *Device
		id     uint32
		closed *atomic.Bool
	}
	h.cleanup = runtime.AddCleanup(h, func(a arg) {
		if a.closed.CompareAndSwap(false, true) {
			leak.Collected("drm handle")
			_ = a.dev.release(a.id)
		}
	}, arg{d, id, h.closed})
	return h
}

// ID returns the GEM handle number; 0 on nil.
func (h *Handle) ID() uint32 {
	if h == nil {
		return 0
	}
	return h.id
}

// Device returns the Device the handle belongs to; nil on nil.
func (h *Handle) Device() *Device {
	if h == nil {
		return nil
	}
	return h.dev
}

// Close releases this reference; the GEM handle itself is closed
// (GEM_CLOSE, or DESTROY_DUMB for a dumb buffer) when no other reference
// remains. Memory stays alive while a framebuffer or an exported DMA-BUF
// uses it. Idempotent and nil-safe; a no-op after the Device is closed.
func (h *Handle) Close() error {
	if h == nil || !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	h.cleanup.Stop()
	return h.dev.release(h.id)
}

// check returns an error unless h is an open Handle of d.
func (d *Device) check(h *Handle) error {
	switch {
	case h == nil:
		return fmt.Errorf("drm: nil Handle: %w", ErrClosed)
	case h.dev != d:
		return fmt.Errorf("drm: handle %d of %s used on %s: %w", h.id, h.dev, d, ErrWrongDevice)
	case h.closed.Load():
		return fmt.Errorf("drm: handle %d on %s: %w", h.id, d, ErrClosed)
	}
	return nil
}

// Import imports buf into the device (PRIME fd → handle) and returns a new
// reference the caller must Close. buf stays owned by the caller and may be
// closed right after: the imported object keeps the memory alive.
//
// Errors: ErrEmulated for an emulated buffer, ErrNotSupported when the
// device cannot import, and the kernel's refusal as an *os.SyscallError
// (EINVAL from a display engine without IOMMU usually means it needs
// physically contiguous memory). Safe for concurrent use.
func (d *Device) Import(buf *dmabuf.Buffer) (*Handle, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if buf == nil {
		return nil, fmt.Errorf("drm: Import of a nil buffer into %s: %w", d, dmabuf.ErrClosed)
	}
	if buf.Emulated() {
		return nil, fmt.Errorf("drm: Import into %s: %w", d, ErrEmulated)
	}
	fd, err := buf.Dup() // keeps the fd valid should buf be closed meanwhile
	if err != nil {
		return nil, fmt.Errorf("drm: Import into %s: %w", d, err)
	}
	defer unix.Close(fd)
	return d.ImportFD(fd)
}

// ImportFD imports the DMA-BUF fd (which the caller keeps) like Import.
// An fd that is not a DMA-BUF gives an error wrapping dmabuf.ErrNotDMABuf.
func (d *Device) ImportFD(fd int) (*Handle, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if !d.caps.PrimeImport {
		return nil, fmt.Errorf("drm: %s cannot import DMA-BUFs (no DRM_PRIME_CAP_IMPORT): %w", d, ErrNotSupported)
	}
	var h *Handle
	err := d.locked(func(dfd int) error {
		id, err := uapi.DRMPrimeFDToHandleCall(dfd, fd)
		if err != nil {
			return err
		}
		d.acquire(id, false)
		h = d.newHandle(id)
		return nil
	})
	if err != nil {
		if isDMABuf, serr := dmabuf.IsDMABuf(fd); serr == nil && !isDMABuf {
			return nil, fmt.Errorf("drm: Import into %s: fd %d: %w (%w)", d, fd, dmabuf.ErrNotDMABuf, err)
		}
		return nil, fmt.Errorf("drm: Import into %s: %w", d, err)
	}
	return h, nil
}

// Export exports the buffer behind h as a new DMA-BUF (PRIME handle → fd,
// O_CLOEXEC|O_RDWR), returned as a Buffer the caller owns and must Close.
// h stays open. Safe for concurrent use.
func (d *Device) Export(h *Handle) (*dmabuf.Buffer, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if err := d.check(h); err != nil {
		return nil, err
	}
	if !d.caps.PrimeExport {
		return nil, fmt.Errorf("drm: %s cannot export DMA-BUFs (no DRM_PRIME_CAP_EXPORT): %w", d, ErrNotSupported)
	}
	fd := -1
	err := d.locked(func(dfd int) error {
		var err error
		fd, err = uapi.DRMPrimeHandleToFDCall(dfd, h.id, unix.O_CLOEXEC|unix.O_RDWR)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("drm: Export of handle %d from %s: %w", h.id, d, err)
	}
	b, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("drm: Export of handle %d from %s: %w", h.id, d, err)
	}
	return b, nil
}

// errnoOf returns the errno of the ioctl refusal inside err, or 0 when err
// did not come from an ioctl.
func errnoOf(err error) unix.Errno {
	var se *os.SyscallError
	var en unix.Errno
	if errors.As(err, &se) && strings.HasPrefix(se.Syscall, "ioctl ") && errors.As(se.Err, &en) {
		return en
	}
	return 0
}
