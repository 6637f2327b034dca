// Package guestcheck is the VM tier's own smoke test: run in the guest
// (make vmtest), it proves the kernel and /init give the project's tests
// what they rely on — both DMA-BUF heaps, udmabuf, vgem and vkms loaded
// from modules, debugfs and sw_sync. On a host without those devices its
// tests skip with a hint; in the VM (HEAPD_REQUIRE_DEVICES=1) a missing
// device fails.
//
// It has no non-test code.
package guestcheck
