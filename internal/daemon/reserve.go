package daemon

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// reserveFD is the fd Serve keeps to give up when accept fails for want
// of fds (EMFILE), so that heapd can still accept one waiting client and
// tell it BUSY. Once given up it is taken back as soon as fds may be
// free again: after the refusal, after every accept and whenever a
// connection closes, so heapd at rest always holds it. The zero value
// holds nothing; methods are safe for concurrent use.
type reserveFD struct {
	mu      sync.Mutex
	fd      int  // meaningful only while ok
	ok      bool // fd is held
	stopped bool // stop was called: take opens nothing
}

// take opens the reserve fd if it is not held, unless stop was called.
// It reports whether it is held afterwards.
func (r *reserveFD) take() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ok || r.stopped {
		return r.ok
	}
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	r.fd, r.ok = fd, true
	return true
}

// give closes the reserve fd, freeing its number for the caller. It
// reports whether one was held.
func (r *reserveFD) give() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ok {
		return false
	}
	unix.Close(r.fd)
	r.ok = false
	return true
}

// stop closes the reserve fd for good: connections that close after Serve
// stopped accepting must not open it again.
func (r *reserveFD) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ok {
		unix.Close(r.fd)
		r.ok = false
	}
	r.stopped = true
}
