package dmaheap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// childEnv makes the test binary open one heap and report, instead of
// running tests: the permission tests re-execute it as another user.
const childEnv = "HEAPD_DMAHEAP_TEST_CHILD"

type childRequest struct {
	Config Config
	Heap   string
}

type childReport struct {
	Opened     bool
	Permission bool // errors.Is ErrPermission and fs.ErrPermission
	Err        string
}

// childMain runs the child's job and reports whether it did.
func childMain() bool {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return false
	}
	var req childRequest
	var rep childReport
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		rep.Err = "bad request: " + err.Error()
	} else if h, err := req.Config.Open(req.Heap); err != nil {
		rep.Err = err.Error()
		rep.Permission = errors.Is(err, ErrPermission) && errors.Is(err, fs.ErrPermission)
	} else {
		rep.Opened = true
		h.Close()
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return true
}

// nobody is the user the child runs as.
const nobody = 65534

// openAsNobody opens heap name with cfg in a copy of the test binary running
// as uid/gid 65534 with no supplementary groups. It needs root.
func openAsNobody(t *testing.T, cfg *Config, name string) childReport {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The build directory is private to root: run a copy nobody can reach.
	dir := publicTempDir(t)
	bin := filepath.Join(dir, "child.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var c Config // nil means the real paths, as does the zero Config
	if cfg != nil {
		c = *cfg
	}
	req, err := json.Marshal(childRequest{Config: c, Heap: name})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(req))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid %d: %v\n%s", nobody, err, out)
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	return rep
}

// publicTempDir is a temporary directory other users may enter.
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dmaheap-test-")
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

// A real open(2) denied by the node's mode gives ErrPermission with the
// node, its owner, group and mode and the fixes.
func TestOpenPermissionDenied(t *testing.T) {
	dir := publicTempDir(t)
	writeTree(t, "linux-6.1", dir)
	cfg := treeConfig(dir)
	node := filepath.Join(cfg.DevDir, "dma_heap", "system")
	if err := os.Chmod(node, 0o600); err != nil {
		t.Fatal(err)
	}
	var rep childReport
	if os.Geteuid() == 0 {
		rep = openAsNobody(t, cfg, "system")
	} else {
		if err := os.Chmod(node, 0); err != nil {
			t.Fatal(err)
		}
		h, err := cfg.Open("system")
		rep = childReport{Opened: err == nil, Permission: errors.Is(err, ErrPermission) && errors.Is(err, fs.ErrPermission)}
		if err != nil {
			rep.Err = err.Error()
		}
		h.Close()
	}
	if rep.Opened || !rep.Permission {
		t.Fatalf("open of a 0600 node as another user: %+v", rep)
	}
	checkPermissionMessage(t, rep.Err, node)
}

func checkPermissionMessage(t *testing.T, msg, node string) {
	t.Helper()
	fi, err := os.Stat(node)
	if err != nil {
		t.Fatal(err)
	}
	ns := statNode(fi)
	owner := lookupUser(ns.uid)
	if owner == "" {
		owner = fmt.Sprint(ns.uid)
	}
	for _, want := range []string{
		"permission denied",
		node + " is " + owner + ":",
		modeString(fi.Mode()),
		"udev rule",
		"heapd daemon",
	} {
		if !contains(msg, want) {
			t.Errorf("permission error does not say %q:\n%s", want, msg)
		}
	}
}
