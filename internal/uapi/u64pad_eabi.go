//go:build arm || mips || mipsle

package uapi

// u64Pad is the padding the C ABI puts before a __u64 that follows an odd
// number of 32-bit fields, and at the end of a struct holding a __u64 whose
// size is not a multiple of 8. The ARM EABI and MIPS o32 align __u64 to 8
// bytes; Go aligns uint64 to 4 on every 32-bit architecture, so without it
// struct drm_mode_fb_cmd2 would be 100 bytes with its modifiers at offset
// 68, where the kernel (104 bytes, offset 72) does not look.
const u64Pad = 4
