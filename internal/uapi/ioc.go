package uapi

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Field widths shared by every Linux architecture.
const (
	iocNRBits   = 8
	iocTypeBits = 8

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits
)

// ioc mirrors the kernel's _IOC macro. It panics at package initialisation
// (every caller is a constant expression evaluated in a var block) when a
// size does not fit the architecture's size field, which would be a
// programming error caught by any test run.
func ioc(dir, typ, nr, size uintptr) uintptr {
	if size >= 1<<iocSizeBits || dir >= 1<<iocDirBits {
		panic("uapi: ioctl argument too large for _IOC size field")
	}
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

func io(typ, nr uintptr) uintptr         { return ioc(iocNone, typ, nr, 0) }
func iow(typ, nr, size uintptr) uintptr  { return ioc(iocWrite, typ, nr, size) }
func iowr(typ, nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, typ, nr, size) }
func sizeof[T any]() uintptr             { var v T; return unsafe.Sizeof(v) }

// ioctl issues one ioctl with a pointer argument. arg must point at Go memory
// that stays alive for the call (the caller's variable does).
func ioctl(fd int, req uintptr, arg unsafe.Pointer, name string) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return 0, os.NewSyscallError("ioctl "+name, errno)
	}
	return r, nil
}
