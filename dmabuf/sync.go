package dmabuf

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/uapi"
)

// Direction says which way the CPU accesses a buffer, for CPU-access
// bracketing and sync_file fences.
type Direction uint8

// Directions, with the values of DMA_BUF_SYNC_READ/WRITE/RW.
const (
	Read      Direction = uapi.DMABufSyncRead
	Write     Direction = uapi.DMABufSyncWrite
	ReadWrite Direction = uapi.DMABufSyncRW
)

// String returns "read", "write" or "read-write".
func (d Direction) String() string {
	switch d {
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

func (d Direction) valid(op string) error {
	switch d {
	case Read, Write, ReadWrite:
		return nil
	}
	return fmt.Errorf("dmabuf: %s(%v): use Read, Write or ReadWrite: %w", op, d, ErrInvalidArgument)
}

// BeginCPUAccess starts CPU access to b in direction dir
// (DMA_BUF_IOCTL_SYNC with DMA_BUF_SYNC_START): it waits for device writes
// (and, for Write, device reads) to finish and makes caches coherent. Pair
// every call with EndCPUAccess in the same direction, or use CPUAccess.
// Interrupted waits (EINTR, EAGAIN) are retried. For an emulated buffer
// (coherent CPU memory) it only checks its arguments. ErrClosed after Close
// or on a nil Buffer. Safe for concurrent use; a concurrent Close does not
// wait for it.
func (b *Buffer) BeginCPUAccess(dir Direction) error {
	return b.syncCPU("BeginCPUAccess", dir, uapi.DMABufSyncStart)
}

// EndCPUAccess ends CPU access started by BeginCPUAccess in the same
// direction (DMA_BUF_IOCTL_SYNC with DMA_BUF_SYNC_END), flushing CPU writes
// for devices. A no-op on an emulated buffer. Same errors and concurrency
// as BeginCPUAccess.
func (b *Buffer) EndCPUAccess(dir Direction) error {
	return b.syncCPU("EndCPUAccess", dir, uapi.DMABufSyncEnd)
}

func (b *Buffer) syncCPU(op string, dir Direction, phase uint64) error {
	if err := dir.valid(op); err != nil {
		return err
	}
	return b.withFD(func(fd int) error {
		if b.kind == KindEmulated {
			return nil
		}
		for {
			err := uapi.DMABufIoctlSyncCall(fd, uint64(dir)|phase)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if err != nil {
				return fmt.Errorf("dmabuf: %s(%v): %w", op, dir, err)
			}
			return nil
		}
	})
}

// CPUAccess brackets f with BeginCPUAccess(dir) and EndCPUAccess(dir). End
// runs even when f fails or panics. It returns f's error if any, else End's.
// f is not called when Begin fails. Safe for concurrent use.
func (b *Buffer) CPUAccess(dir Direction, f func() error) (err error) {
	if err := b.BeginCPUAccess(dir); err != nil {
		return err
	}
	defer func() {
		if endErr := b.EndCPUAccess(dir); err == nil {
			err = endErr
		}
	}()
	return f()
}

// ExportSyncFile returns a sync_file holding the buffer's current fences
// (DMA_BUF_IOCTL_EXPORT_SYNC_FILE): for Read the fences a reader must wait
// for (device writes), for Write or ReadWrite all of them. The returned file
// is owned by the caller. ErrNotSupported on an emulated buffer or a kernel
// without the ioctl (before 6.0). ErrClosed after Close or on a nil Buffer.
// Safe for concurrent use.
func (b *Buffer) ExportSyncFile(dir Direction) (*os.File, error) {
	if err := dir.valid("ExportSyncFile"); err != nil {
		return nil, err
	}
	var f *os.File
	err := b.withFD(func(fd int) error {
		if b.kind == KindEmulated {
			return fmt.Errorf("dmabuf: ExportSyncFile: %s buffers have no fences: %w", EmulatedLabel, ErrNotSupported)
		}
		sfd, err := uapi.DMABufExportSyncFileCall(fd, uint32(dir))
		if err != nil {
			return syncFileErr("ExportSyncFile", err)
		}
		f = os.NewFile(uintptr(sfd), "sync_file")
		return nil
	})
	return f, err
}

// ImportSyncFile adds the fences of sync (a sync_file, for example an
// *os.File) to the buffer (DMA_BUF_IOCTL_IMPORT_SYNC_FILE): as write fences
// for Write or ReadWrite, which later readers and writers wait for, as read
// fences for Read, which only later writers wait for. The caller keeps
// ownership of sync. ErrNotSupported on an emulated buffer or a kernel
// without the ioctl (before 6.0). ErrClosed after Close or on a nil Buffer.
// Safe for concurrent use.
func (b *Buffer) ImportSyncFile(dir Direction, sync syscall.Conn) error {
	if sync == nil {
		return fmt.Errorf("dmabuf: ImportSyncFile: nil sync_file: %w", ErrInvalidArgument)
	}
	rc, err := sync.SyscallConn()
	if err != nil {
		return fmt.Errorf("dmabuf: ImportSyncFile: %w", err)
	}
	var importErr error
	if err := rc.Control(func(fd uintptr) { importErr = b.ImportSyncFD(dir, int(fd)) }); err != nil {
		return fmt.Errorf("dmabuf: ImportSyncFile: %w", err)
	}
	return importErr
}

// ImportSyncFD is ImportSyncFile for a raw sync_file fd, which the caller
// keeps (it is neither closed nor retained). Same errors and concurrency as
// ImportSyncFile.
func (b *Buffer) ImportSyncFD(dir Direction, syncFD int) error {
	if err := dir.valid("ImportSyncFile"); err != nil {
		return err
	}
	return b.withFD(func(fd int) error {
		if b.kind == KindEmulated {
			return fmt.Errorf("dmabuf: ImportSyncFile: %s buffers have no fences: %w", EmulatedLabel, ErrNotSupported)
		}
		if err := uapi.DMABufImportSyncFileCall(fd, uint32(dir), syncFD); err != nil {
			return syncFileErr("ImportSyncFile", err)
		}
		return nil
	})
}

func syncFileErr(op string, err error) error {
	if errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("dmabuf: %s: kernel has no sync_file import/export (needs Linux 6.0): %w (%w)", op, ErrNotSupported, err)
	}
	return fmt.Errorf("dmabuf: %s: %w", op, err)
}

// FillPages maps the buffer, writes v to the first byte of every page
// inside a CPUAccess(Write) bracket and unmaps it: every page is then
// allocated (zeroed by the kernel first), as a user's first writes would
// make it. It neither takes nor closes an fd; nil or closed Buffers return
// the error Map returns. Safe for concurrent use as Map and CPUAccess are.
func (b *Buffer) FillPages(v byte) error {
	m, err := b.Map(ProtReadWrite)
	if err != nil {
		return err
	}
	page := os.Getpagesize()
	err = b.CPUAccess(Write, func() error {
		bs := m.Bytes()
		for i := 0; i < len(bs); i += page {
			bs[i] = v
		}
		return nil
	})
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	return err
}
