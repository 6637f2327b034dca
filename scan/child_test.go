package scan

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// childEnv makes the test binary do one job instead of running tests: the
// tests re-execute it to get processes that hold buffers, or that scan as
// another user. Its value is a JSON childJob.
const childEnv = "HEAPD_SCAN_TEST_CHILD"

type childJob struct {
	// Scan: run Scan with Config and print the Snapshot as JSON.
	Scan   bool
	Config Config
	// Hold: allocate, map and hold buffers (see holdMain), print what it
	// holds, then wait for stdin to close.
	Hold *holdSpec
	// Load: create Load.FDs memfds (or heap buffers, see loadMain), print
	// "ready", then wait for stdin to close.
	Load *loadSpec
}

// childMain runs the job in childEnv, if any, and reports whether it did.
func childMain() bool {
	spec, ok := os.LookupEnv(childEnv)
	if !ok {
		return false
	}
	var job childJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Fprintf(os.Stderr, "child: bad job %q: %v\n", spec, err)
		os.Exit(2)
	}
	var err error
	switch {
	case job.Scan:
		var s *Snapshot
		if s, err = Scan(context.Background(), &job.Config); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(s)
		}
	case job.Hold != nil:
		err = holdMain(*job.Hold)
	case job.Load != nil:
		err = loadMain(*job.Load)
	default:
		err = fmt.Errorf("empty job %q", spec)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child: %v\n", err)
		os.Exit(1)
	}
	return true
}

// childCmd returns a command that runs job in a copy of the test binary.
// With asUser set (which needs root) the copy runs as that uid and gid
// with no supplementary groups, from a directory the user can reach.
func childCmd(t testing.TB, job childJob, asUser *uint32) *exec.Cmd {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if asUser != nil {
		// The build directory is private to root: run a copy the user can
		// reach.
		dir := publicTempDir(t)
		cp := filepath.Join(dir, "child.test")
		if err := copyFile(bin, cp, 0o755); err != nil {
			t.Fatal(err)
		}
		bin = cp
	}
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asUser != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: *asUser, Gid: *asUser, Groups: []uint32{}}
	}
	return cmd
}

// scanAs runs Scan(cfg) in a child as uid (root needed) and returns its
// snapshot.
func scanAs(t *testing.T, uid uint32, cfg Config) *Snapshot {
	t.Helper()
	out, err := childCmd(t, childJob{Scan: true, Config: cfg}, &uid).Output()
	if err != nil {
		t.Fatalf("scan as uid %d: %v", uid, err)
	}
	s := new(Snapshot)
	if err := json.Unmarshal(out, s); err != nil {
		t.Fatalf("scan as uid %d: %q: %v", uid, out, err)
	}
	return s
}

// publicTempDir is a temporary directory other users may enter.
func publicTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "scan-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
