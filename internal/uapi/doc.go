// Package uapi owns heapd's raw kernel interface: ioctl request numbers,
// the layouts of their argument structs, and one small typed wrapper per
// ioctl. Nothing outside this package builds an ioctl argument.
//
// Request numbers are derived from one _IOC helper whose direction bits and
// field widths come from per-architecture files (the generic layout used by
// x86, arm, arm64 and riscv, and the layout of powerpc and mips). Struct
// layouts use structs.HostLayout and the Go types that match the kernel's on
// every architecture (pointer-sized fields are uintptr), so the same
// definitions are right on 64-bit and 32-bit targets; the tests pin the
// amd64 numbers, sizes and offsets to the kernel's.
//
// The wrappers take raw file descriptors that the caller owns; they never
// close them and never retain them. Any fd a wrapper returns is new and owned
// by the caller. Errors are *os.SyscallError values naming the ioctl, so
// errors.Is(err, unix.EINVAL) works. Wrappers are safe for concurrent use;
// the argument structs are not.
//
// Using this package needs no privilege by itself; the device nodes the fds
// come from decide that.
package uapi
