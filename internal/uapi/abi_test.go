package uapi

import (
	"runtime"
	"testing"
)

// TestABI pins every request number and layout internal/uapi builds
// (abiEntries) to what the kernel headers give on the GOARCH the test
// runs on (abiWant, generated per architecture by testdata/abi/gen.sh).
// `make abi` runs it for arm64 and arm under qemu-user.
func TestABI(t *testing.T) {
	if abiWant == nil {
		t.Skipf("no kernel-header values generated for %s (testdata/abi/gen.sh's targets)", runtime.GOARCH)
	}
	seen := make(map[string]bool, len(abiEntries))
	for _, e := range abiEntries {
		seen[e.name] = true
		want, ok := abiWant[e.name]
		if !ok {
			t.Errorf("%s: no %s value generated: run testdata/abi/gen.sh", e.name, runtime.GOARCH)
			continue
		}
		if e.got != want {
			t.Errorf("%s on %s = %#x, want %#x", e.name, runtime.GOARCH, e.got, want)
		}
	}
	for name := range abiWant {
		if !seen[name] {
			t.Errorf("%s: a %s value but no entry: run testdata/abi/gen.sh", name, runtime.GOARCH)
		}
	}
}
