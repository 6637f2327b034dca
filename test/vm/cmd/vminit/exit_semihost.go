//go:build linux && (arm || arm64)

package main

import (
	"errors"
	"runtime"
	"unsafe"
)

// Arm semihosting (the "Semihosting for AArch32 and AArch64" specification):
// QEMU started with -semihosting-config enable=on,userspace=on,target=native
// serves the calls even from user space (EL0), so /init can hand its status
// over without a device.
const (
	semihostExitExtended    = 0x20    // SYS_EXIT_EXTENDED: exit with a status on A32 and A64
	adpStoppedApplicationEx = 0x20026 // ADP_Stopped_ApplicationExit
)

// semihost issues one semihosting call (op in r0/x0, param in r1/x1) and
// returns what QEMU put in r0/x0. Written in assembly (semihost_arm.s,
// semihost_arm64.s): HLT #0xF000, in its A32 or A64 encoding, is the trap
// QEMU intercepts.
func semihost(op, param uintptr) uintptr

// hostExit makes QEMU exit at once with status code<<1|1 — 1 for a pass and
// 3 for a failure, the same statuses as isa-debug-exit on x86. A kernel
// panic (panic=-1, -no-reboot) exits QEMU with 0, which the runner counts as
// a failure. It returns only if the call was not intercepted (QEMU started
// without semihosting), as an error.
func hostExit(code byte) error {
	// The parameter block: two words of the guest's pointer size.
	block := [2]uintptr{adpStoppedApplicationEx, uintptr(code)<<1 | 1}
	semihost(semihostExitExtended, uintptr(unsafe.Pointer(&block)))
	runtime.KeepAlive(&block)
	return errNoSemihosting
}

var errNoSemihosting = errors.New("vminit: the semihosting exit returned: QEMU was started without -semihosting-config enable=on,userspace=on")
