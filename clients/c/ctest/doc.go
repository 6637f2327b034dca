// Package ctest runs the tests of heapd's C client library (clients/c)
// from go test, so that `make test` covers it.
//
// On the host it builds the library and its test programs with make and
// gcc three times (warnings as errors; AddressSanitizer and UBSan; static)
// and runs each against a fake server (malformed replies, fd hygiene, the
// golden bytes of docs/protocol.md) and against the real heapd on a
// temporary socket: success, policy denial, quota exhaustion, connection
// limits, a daemon that is killed or stopped. Running as another uid needs
// root; without gcc the tests skip with a hint.
//
// In the VM tier there is no compiler: the runner builds the static
// programs on the host (`make -C clients/c/ctest vm-static OUT=DIR`) and
// packs them beside the test binary in vm-static/, and the same tests run
// them against real DMA-BUF heaps.
//
// The package holds tests only.
package ctest
