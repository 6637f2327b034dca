//go:build !amd64 && !386 && !arm64 && !arm

package uapi

// abiWant is nil where testdata/abi/gen.sh generates no values: TestABI
// skips.
var abiWant map[string]uintptr
