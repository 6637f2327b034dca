// Package testutil holds the test scaffolding every heapd package uses: a
// TestMain wrapper that fails the package on leaked goroutines, leaked file
// descriptors and fds that were only closed by a cleanup; and the
// integration-test gate that skips with a hint on machines without the
// kernel feature, or fails where the feature is required (the VM tier sets
// HEAPD_REQUIRE_DEVICES=1, or pass -heapd.require-devices).
//
// It is imported only by tests. Nothing here needs privilege.
package testutil
