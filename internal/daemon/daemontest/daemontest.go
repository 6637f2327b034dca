// Package daemontest starts the real heapd binary for end-to-end tests:
// as a separate process, on a socket in a temporary directory, with
// sd_notify wired to the test so that Start returns once heapd is
// serving. It is imported only by tests.
package daemontest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heapd/heapd/internal/testutil"
)

// Daemon is a running heapd.
type Daemon struct {
	// Socket is the path heapd listens on; Dir is its directory (mode
	// 0755, so other uids can reach the socket).
	Socket, Dir string
	// Cmd is the process.
	Cmd *exec.Cmd

	t      testing.TB
	notify *net.UnixConn
	log    *syncBuffer
	done   chan struct{}
	err    error
}

// Options configure Start.
type Options struct {
	// Socket to listen on; empty means a fresh temporary directory.
	Socket string
	// Args are more heapd flags.
	Args []string
	// Env is added to heapd's environment.
	Env []string
	// Policy is the text of the policy file heapd runs with (--config);
	// empty means TestPolicy. Ignored when Args has --config.
	Policy string
}

// TestPolicy is the policy heapd runs with in tests that do not choose
// one: root and heapd's own user may allocate from every heap; every other
// user from system only, without quota. (The built-in default policy
// denies users outside video/render and local sessions, which tests of
// other things do not want to depend on.)
const TestPolicy = `# daemontest.TestPolicy
[ledger]
release_interval = "100ms"

[[rule]]
name = "root"
uid = [0]
heaps = ["*"]

[[rule]]
name = "heapd-user"
daemon_user = true
heaps = ["*"]

[[rule]]
name = "everyone"
heaps = ["system"]
`

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of a heapd binary. In the VM tier
// (HEAPD_REQUIRE_DEVICES=1) and wherever `go` is missing it is heapd on
// PATH, which the VM tier packs into /bin; elsewhere it is built once per
// test process into a temporary directory (with -race when the tests
// run with it), so the tests always run the code under test.
func Binary(t testing.TB) string {
	t.Helper()
	if testutil.Required() || !haveGo() {
		p, err := exec.LookPath("heapd")
		if err != nil {
			t.Fatalf("heapd binary not on PATH (%v): the VM tier packs cmd/heapd into /bin", err)
		}
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "heapd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "heapd")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/heapd/heapd/cmd/heapd")
		cmd := exec.Command("go", args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build heapd: %v\n%s", err, out.Bytes())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Cleanup removes the binary Binary built. Call it from TestMain after
// the tests ran.
func Cleanup() {
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}

func haveGo() bool {
	_, err := exec.LookPath("go")
	return err == nil
}

// Start starts heapd and waits until it reports READY=1. The daemon is
// stopped (SIGTERM, then checked to exit cleanly) when the test ends.
func Start(t testing.TB, opts *Options) *Daemon {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	bin := Binary(t)
	d := &Daemon{t: t, log: &syncBuffer{}, done: make(chan struct{})}
	d.Socket = opts.Socket
	if d.Socket == "" {
		d.Dir = TempDir(t)
		d.Socket = filepath.Join(d.Dir, "socket")
	} else {
		d.Dir = filepath.Dir(d.Socket)
	}
	notifyPath := filepath.Join(TempDir(t), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d.notify = nc
	args := append([]string{"--socket", d.Socket, "--log-level", "debug"}, opts.Args...)
	if !hasFlag(opts.Args, "config") {
		text := opts.Policy
		if text == "" {
			text = TestPolicy
		}
		path := filepath.Join(TempDir(t), "heapd.toml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	d.Cmd = exec.Command(bin, args...)
	d.Cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	d.Cmd.Env = append(d.Cmd.Env, opts.Env...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.log, d.log
	if err := d.Cmd.Start(); err != nil {
		nc.Close()
		t.Fatal(err)
	}
	go func() {
		d.err = d.Cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Stop()
		d.notify.Close()
	})
	if err := d.WaitNotify("READY=1", 20*time.Second); err != nil {
		t.Fatalf("heapd did not become ready: %v\nlog:\n%s", err, d.Log())
	}
	return d
}

// AdminSocket is the path of the daemon's admin socket.
func (d *Daemon) AdminSocket() string { return d.Socket + ".admin" }

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// WaitNotify waits for a notification containing state.
func (d *Daemon) WaitNotify(state string, timeout time.Duration) error {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for {
		d.notify.SetReadDeadline(deadline)
		n, err := d.notify.Read(buf)
		if err != nil {
			select {
			case <-d.done:
				return fmt.Errorf("heapd exited: %v", d.err)
			default:
			}
			return err
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == state {
				return nil
			}
		}
	}
}

// PID returns the daemon's pid.
func (d *Daemon) PID() int { return d.Cmd.Process.Pid }

// Log returns what heapd wrote so far.
func (d *Daemon) Log() string { return d.log.String() }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig os.Signal) { _ = d.Cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for the exit, failing the test unless heapd
// exits with status 0 within 15s (then it is killed). Idempotent.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			d.t.Errorf("heapd exited with %v\nlog:\n%s", d.err, d.Log())
		}
	case <-time.After(15 * time.Second):
		d.Cmd.Process.Kill()
		<-d.done
		d.t.Errorf("heapd did not exit within 15s of SIGTERM\nlog:\n%s", d.Log())
	}
}

// Kill kills the daemon with SIGKILL (a crash) and waits for it.
func (d *Daemon) Kill() {
	_ = d.Cmd.Process.Kill()
	<-d.done
}

// Done is closed when the process has exited; Err is its exit error.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is the process's exit error once Done is closed.
func (d *Daemon) Err() error { return d.err }

// FDs returns the daemon's open fds and their targets (/proc/PID/fd).
func (d *Daemon) FDs() map[int]string {
	return ProcessFDs(d.PID())
}

// Baseline returns the daemon's fd set once it has been stable for
// 100ms (right after READY=1 the daemon may still be closing the
// notification socket).
func (d *Daemon) Baseline() map[int]string {
	prev := d.FDs()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		cur := d.FDs()
		if sameKeys(prev, cur) {
			return cur
		}
		prev = cur
	}
	return prev
}

// WaitFDs waits up to 5s for the daemon's fd set to equal want (the
// daemon notices closed connections asynchronously) and fails the test
// with the difference otherwise.
func (d *Daemon) WaitFDs(t testing.TB, want map[int]string) {
	t.Helper()
	var got map[int]string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got = d.FDs()
		if sameKeys(want, got) {
			return
		}
	}
	t.Errorf("daemon fds did not return to baseline:\nwant %v\ngot  %v", want, got)
}

// ProcessFDs lists /proc/PID/fd of any process.
func ProcessFDs(pid int) map[int]string {
	out := map[int]string{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil {
			out[fd] = target
		}
	}
	return out
}

func sameKeys(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// TempDir returns a t.TempDir() that every uid can enter (the socket is
// 0666; its directories must be searchable by the test's other uids).
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			break
		}
		if st.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Main is testutil.Main for packages that start heapd: the same checks
// (leaked goroutines, leaked fds, fds closed only by a cleanup), then it
// removes the heapd binary Binary built. (testutil.Main exits before a
// caller could clean up.)
func Main(m *testing.M) {
	code := testutil.RunMain(m)
	Cleanup()
	os.Exit(code)
}
