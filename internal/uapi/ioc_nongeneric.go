//go:build linux && (ppc64 || ppc64le || mips || mipsle || mips64 || mips64le)

package uapi

// powerpc and mips (and sparc, which Go does not target) use a 13-bit size
// field and three direction bits with "none" as its own bit.
const (
	iocSizeBits = 13
	iocDirBits  = 3

	iocNone  = 1
	iocRead  = 2
	iocWrite = 4
)
