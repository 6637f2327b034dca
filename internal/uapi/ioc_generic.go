//go:build linux && !(ppc64 || ppc64le || mips || mipsle || mips64 || mips64le)

package uapi

// The generic _IOC layout (asm-generic/ioctl.h): x86, arm, arm64, riscv,
// loong64, s390x.
const (
	iocSizeBits = 14
	iocDirBits  = 2

	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)
