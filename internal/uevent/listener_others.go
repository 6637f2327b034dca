//go:build !linux

package uevent

import (
	"fmt"
	"runtime"
)

// openSource fails: uevents, netlink and inotify are Linux interfaces.
func openSource(*Config) (source, error) {
	return nil, fmt.Errorf("%w: not implemented on %s", ErrNotSupported, runtime.GOOS)
}
