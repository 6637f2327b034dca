// Package leak counts file descriptors that were closed only by a garbage
// collector cleanup (runtime.AddCleanup) instead of an explicit Close. Such a
// close is a safety net, not a release path: tests fail when the count is
// not zero (see internal/testutil.Main).
//
// The counter is the one piece of package-level state in heapd, kept because
// cleanups run on the runtime's goroutine with no owner to report to. It is
// safe for concurrent use.
package leak

import "sync/atomic"

var collected atomic.Int64

// Collected records that a cleanup closed an fd of the named kind.
func Collected(kind string) { collected.Add(1); _ = kind }

// Count returns how many fds were closed by cleanups since the process
// started.
func Count() int64 { return collected.Load() }
