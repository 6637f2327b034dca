package testutil

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heapd/heapd/internal/leak"
)

// RequireEnv is the environment variable that turns integration skips into
// failures. The VM tier's /init sets it.
const RequireEnv = "HEAPD_REQUIRE_DEVICES"

var requireDevices = flag.Bool("heapd.require-devices", false,
	"fail instead of skipping integration tests whose kernel feature is missing")

// Required reports whether missing kernel features must fail tests.
func Required() bool {
	return *requireDevices || os.Getenv(RequireEnv) == "1"
}

// NeedPath skips t (or fails it when Required) unless path exists. hint
// says what is probably missing, for example "kernel built without
// CONFIG_DMABUF_HEAPS_SYSTEM?".
func NeedPath(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, fmt.Sprintf("%s missing: %s", path, hint))
	}
}

// Missing skips t with msg, or fails it when Required.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if Required() {
		t.Fatalf("required kernel feature missing (%s set): %s", RequireEnv, msg)
	}
	t.Skip(msg)
}

// NeedRoot skips t (or fails it when Required) unless running as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// Main runs the tests of a package and then fails the package when a
// goroutine is still running, a file descriptor opened during the tests is
// still open, or an fd was closed only by a cleanup. Use it as
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
func Main(m *testing.M) {
	os.Exit(RunMain(m))
}

// RunMain is Main without the exit: it runs the tests, applies the leak
// checks and returns the exit code, so a TestMain can clean up after it.
func RunMain(m *testing.M) int {
	warmUp()
	before := OpenFDs()
	// Snapshot the goroutines running before the tests (the runtime's and
	// the test framework's own); any other still running after them leaked.
	ignore := goleak.IgnoreCurrent()
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(ignore); err != nil {
		fmt.Fprintf(os.Stderr, "testutil: leaked goroutines: %v\n", err)
		return 1
	}
	// Let pending cleanups run so that a leak shows up in the counter.
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := leak.Count(); n != 0 {
		fmt.Fprintf(os.Stderr, "testutil: %d fd(s) were closed only by a GC cleanup: a Close is missing\n", n)
		return 1
	}
	after := OpenFDs()
	var leaked []string
	for fd, target := range after {
		if _, ok := before[fd]; !ok {
			leaked = append(leaked, fmt.Sprintf("fd %d -> %s", fd, target))
		}
	}
	if len(leaked) > 0 {
		sort.Strings(leaked)
		fmt.Fprintf(os.Stderr, "testutil: leaked file descriptors:\n  %s\n", strings.Join(leaked, "\n  "))
		return 1
	}
	return 0
}

// warmUp makes the runtime open the fds it keeps for its own use (the
// netpoller's epoll and wake-up fds) before the baseline is taken.
func warmUp() {
	r, w, err := os.Pipe()
	if err == nil {
		_ = r.SetDeadline(time.Now())
		r.Close()
		w.Close()
	}
}

// OpenFDs returns this process's open fds and what they point at.
func OpenFDs() map[int]string {
	out := map[int]string{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out[fd] = target
	}
	// The directory fd used by ReadDir is closed by now but may appear in
	// the listing; drop entries that no longer resolve.
	for fd, target := range out {
		if target == "" {
			delete(out, fd)
		}
	}
	return out
}

// CheckFDs fails t if the set of open fds after the test differs from the
// set before it. Call it first in a test: it registers a Cleanup.
func CheckFDs(t testing.TB) {
	t.Helper()
	before := OpenFDs()
	t.Cleanup(func() {
		after := OpenFDs()
		for fd, target := range after {
			if _, ok := before[fd]; !ok {
				t.Errorf("leaked fd %d -> %s", fd, target)
			}
		}
	})
}
