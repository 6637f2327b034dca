//go:build !linux

package uevent

// childMain: the namespace tests exist only on Linux.
func childMain() bool { return false }
