// Command vminit is /init of the VM tier's guest: a static Go program the
// host runner (test/vm/cmd/vmrunner) packs into the initramfs together with
// the project's test binaries, its commands and the kernel modules.
//
// It mounts proc, sysfs, devtmpfs, debugfs and a tmpfs on /tmp; brings the
// loopback interface up; loads the
// modules listed in the run configuration (vmproto.ConfigPath) with
// finit_module(2), each after the modules its .modinfo says it depends on;
// waits for their DRM devices; then either runs every test binary with
// -test.v and the environment that turns "device missing" skips into
// failures (test mode) or runs one command line (run mode). It prints
// machine-readable status lines (see package vmproto) on the console, hands
// pass/fail to QEMU (isa-debug-exit on x86) and powers the VM off.
//
// A test binary fails when it exits non-zero, prints any "--- SKIP" line
// (the tier's bar is zero skips), or when the kernel logs an oops, BUG or
// WARN splat while it runs.
//
// It runs as PID 1 with every privilege; it is not meant to run anywhere
// else.
package main
