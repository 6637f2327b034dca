package emulated

import (
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
)

// Label describes every emulated buffer; it is dmabuf.EmulatedLabel.
const Label = dmabuf.EmulatedLabel

// ErrInvalidSize means a requested size is zero, negative, or too large to
// round up to whole pages.
var ErrInvalidSize = errors.New("emulated: invalid size")

// Alloc returns a new zero-filled emulated buffer of at least size bytes
// (rounded up to whole pages; Buffer.Size reports the real size) named name.
// The name follows dmabuf.ValidateName (at most 31 bytes, no NUL or
// newline) and is fixed for the buffer's life. The caller owns the returned
// Buffer and must Close it. On error no fd is left open. Safe for concurrent
// use.
//
// A size larger than the machine's RAM fails with an error matching
// unix.ENOMEM, as a kernel heap would: a memfd would accept it (pages are
// only allocated when touched) and fail later, far from the cause.
func Alloc(size int64, name string) (*dmabuf.Buffer, error) {
	rounded, err := roundSize(size)
	if err != nil {
		return nil, err
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil {
		if ram := uint64(si.Totalram) * uint64(si.Unit); ram > 0 && uint64(rounded) > ram {
			return nil, fmt.Errorf("emulated: Alloc(%d): larger than this machine's %d bytes of RAM: %w", size, ram, unix.ENOMEM)
		}
	}
	if err := dmabuf.ValidateName(name); err != nil {
		return nil, fmt.Errorf("emulated: Alloc: %w", err)
	}
	fd, err := unix.MemfdCreate(dmabuf.EmulatedNamePrefix+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("emulated: Alloc: %w", os.NewSyscallError("memfd_create", err))
	}
	b, err := seal(fd, rounded)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("emulated: Alloc(%d, %q): %w", size, name, err)
	}
	return b, nil
}

// seal sizes and seals fd and wraps it; on error the caller closes fd.
func seal(fd int, size int64) (*dmabuf.Buffer, error) {
	if err := unix.Ftruncate(fd, size); err != nil {
		return nil, os.NewSyscallError("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return nil, os.NewSyscallError("fcntl F_ADD_SEALS", err)
	}
	return dmabuf.New(fd)
}

// roundSize rounds size up to whole pages.
func roundSize(size int64) (int64, error) {
	if size <= 0 {
		return 0, fmt.Errorf("emulated: size %d: a buffer needs at least 1 byte: %w", size, ErrInvalidSize)
	}
	page := int64(unix.Getpagesize())
	if size > math.MaxInt64-(page-1) {
		return 0, fmt.Errorf("emulated: size %d overflows when rounded up to %d-byte pages: %w", size, page, ErrInvalidSize)
	}
	return (size + page - 1) &^ (page - 1), nil
}
