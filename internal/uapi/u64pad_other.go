//go:build !(arm || mips || mipsle)

package uapi

// u64Pad is 0 where Go already lays __u64 out as the C ABI does: 64-bit
// architectures align both to 8, and i386 aligns both to 4 (so there, as in
// the kernel's i386 headers, struct drm_mode_fb_cmd2 is 100 bytes).
const u64Pad = 0
