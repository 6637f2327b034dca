package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// demoPrimaryCheck is the compositor's own proof, from outside the
// renderer, that the renderer never had the display's primary node. The
// renderer's report (demoChild.OpenedPrimary) is what the renderer says
// about itself; this is what the compositor checks:
//
//   - before the renderer starts: the node's mode and owner do not grant
//     the renderer's uid, gid or groups any access, and a separate process
//     with exactly the renderer's credentials really tries to open it and
//     is refused by the kernel (which covers what the mode bits do not:
//     ACLs, security modules);
//   - while the renderer runs: the compositor reads /proc/<pid>/status
//     (the renderer's real ids) and samples /proc/<pid>/fd and maps,
//     comparing every fd by device number, so the node opened under any
//     path or mapped would show.
//
// The kernel's refusal is the proof; the sampling would catch an fd handed
// in from elsewhere (none is: the renderer gets its socketpair and the
// render node).
type demoPrimaryCheck struct {
	Node string `json:"node"`
	// Mode is the node's type, permissions and owner ("crw------- 0:0");
	// ModeAllows whether they grant the renderer's ids read or write.
	Mode       string `json:"mode"`
	ModeAllows bool   `json:"mode_allows"`
	// ProbeCredentials are the ids the probe process ran with, as it saw
	// them; ProbeError what its open(O_RDWR) of the node gave ("permission
	// denied" expected); ProbeOpened that the open succeeded.
	ProbeCredentials string `json:"probe_credentials"`
	ProbeError       string `json:"probe_error"`
	ProbeOpened      bool   `json:"probe_opened"`
	// RendererCredentials are the renderer's ids from /proc/<pid>/status
	// while it ran.
	RendererCredentials string `json:"renderer_credentials"`
	// Samples counts the reads of the renderer's fds and mappings while it
	// ran; SeenOpen reports a sample holding the node, SeenAs how ("fd 7",
	// "mapping").
	Samples  int    `json:"samples"`
	SeenOpen bool   `json:"seen_open"`
	SeenAs   string `json:"seen_as,omitempty"`
}

// verdict returns nil when the check proves the renderer never had the
// node, else an error saying what failed.
func (c *demoPrimaryCheck) verdict() error {
	want := demoCredentials()
	switch {
	case c.ModeAllows:
		return fmt.Errorf("%s (%s) grants the renderer's %s access: the demo needs a renderer without access to the display's primary node", c.Node, c.Mode, want)
	case c.ProbeOpened:
		return fmt.Errorf("a process with the renderer's credentials (%s) opened %s: the kernel does not keep the renderer out", c.ProbeCredentials, c.Node)
	case c.ProbeError == "":
		return fmt.Errorf("no probe of %s as the renderer ran", c.Node)
	case c.ProbeCredentials != want:
		return fmt.Errorf("the probe ran as %s, not as the renderer (%s)", c.ProbeCredentials, want)
	case c.SeenOpen:
		return fmt.Errorf("the compositor saw the renderer holding %s (%s)", c.Node, c.SeenAs)
	case c.Samples == 0:
		return errors.New("the compositor could not look at the renderer's fds while it ran")
	case c.RendererCredentials != want:
		return fmt.Errorf("the renderer ran as %s, not as %s", c.RendererCredentials, want)
	}
	return nil
}

// summary is the check in one line, for the table.
func (c *demoPrimaryCheck) summary() string {
	allows := "denies"
	if c.ModeAllows {
		allows = "ALLOWS"
	}
	return fmt.Sprintf("%s %s %s %s; open as the renderer: %s; renderer (%s) watched %d times: %s",
		c.Node, c.Mode, allows, demoCredentials(), c.ProbeError, c.RendererCredentials, c.Samples, c.seen())
}

func (c *demoPrimaryCheck) seen() string {
	if c.SeenOpen {
		return "held it (" + c.SeenAs + ")"
	}
	return "never held it"
}

// demoSysProcAttr are the renderer's (and the probe's) credentials: uid
// and gid demoUID, no supplementary groups, killed with its parent.
func demoSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: demoUID, Gid: demoUID, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
}

// demoCredentials renders the renderer's credentials as credString does.
func demoCredentials() string { return credString(demoUID, demoUID, nil) }

func credString(uid, gid int, groups []int) string {
	gs := make([]string, len(groups))
	for i, g := range groups {
		gs[i] = strconv.Itoa(g)
	}
	return fmt.Sprintf("uid %d gid %d groups [%s]", uid, gid, strings.Join(gs, " "))
}

// demoSelfCommand returns a command that re-executes this executable
// through an fd, so an unprivileged child needs no search permission on
// the directories it lives in (a test binary's private build directory).
// The caller closes the returned file after Start.
func demoSelfCommand(ctx context.Context, args ...string) (*exec.Cmd, *os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	ef, err := os.Open(exe)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, fmt.Sprintf("/proc/self/fd/%d", ef.Fd()), args...)
	cmd.Args[0] = "heapctl"
	cmd.Env = append(os.Environ(), demoChildEnv+"=1")
	cmd.Dir = "/"
	cmd.SysProcAttr = demoSysProcAttr()
	return cmd, ef, nil
}

// checkPrimaryBefore fills the checks made before the renderer starts:
// the node's mode, and a real open by a probe process with the
// renderer's credentials.
func checkPrimaryBefore(ctx context.Context, c *demoPrimaryCheck) error {
	var st unix.Stat_t
	if err := unix.Stat(c.Node, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: c.Node, Err: err}
	}
	perm := fs.FileMode(st.Mode & 0o777)
	c.Mode = fmt.Sprintf("c%s %d:%d", perm.String()[1:], st.Uid, st.Gid)
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		c.Mode = "not a character device: " + c.Mode
	}
	c.ModeAllows = modeAllows(uint32(st.Mode), st.Uid, st.Gid, demoUID, demoUID, nil)

	cmd, ef, err := demoSelfCommand(ctx, "demo", "scanout-probe", "--primary", c.Node)
	if err != nil {
		return err
	}
	defer ef.Close()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("primary node probe: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	var p demoProbeReport
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		return fmt.Errorf("primary node probe: malformed report %q: %w", out.String(), err)
	}
	c.ProbeCredentials, c.ProbeError, c.ProbeOpened = p.Credentials, p.Error, p.Opened
	return nil
}

// modeAllows reports whether a file of mode, owned by owner:group, grants
// uid (with gid and groups) read or write permission by its mode bits.
func modeAllows(mode, owner, group uint32, uid, gid int, groups []int) bool {
	switch {
	case uint32(uid) == owner:
		return mode&0o600 != 0
	case uint32(gid) == group:
		return mode&0o060 != 0
	}
	for _, g := range groups {
		if uint32(g) == group {
			return mode&0o060 != 0
		}
	}
	return mode&0o006 != 0
}

// demoProbeReport is what `heapctl demo scanout-probe` prints.
type demoProbeReport struct {
	Credentials string `json:"credentials"`
	Opened      bool   `json:"opened"`
	Error       string `json:"error"`
}

// demoProbe is the probe process: it tries to open node read-write as
// whoever it runs as and prints what happened.
func demoProbe(node string) demoProbeReport {
	groups, _ := os.Getgroups()
	r := demoProbeReport{Credentials: credString(os.Geteuid(), os.Getegid(), groups)}
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	unix.Close(fd)
	r.Opened, r.Error = true, "none: opened"
	return r
}

// primaryWatch samples a running renderer's fds and mappings for the
// primary node until Stop.
type primaryWatch struct {
	stop chan struct{}
	done chan struct{}
	c    *demoPrimaryCheck
}

// watchPrimary starts sampling pid for c.Node; Stop ends it.
func watchPrimary(pid int, c *demoPrimaryCheck) (*primaryWatch, error) {
	return watchProc(filepath.Join("/proc", strconv.Itoa(pid)), c)
}

// watchProc is watchPrimary over a /proc/<pid> directory.
func watchProc(proc string, c *demoPrimaryCheck) (*primaryWatch, error) {
	var st unix.Stat_t
	if err := unix.Stat(c.Node, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: c.Node, Err: err}
	}
	w := &primaryWatch{stop: make(chan struct{}), done: make(chan struct{}), c: c}
	go func() {
		defer close(w.done)
		for {
			w.sample(proc, uint64(st.Rdev))
			select {
			case <-w.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return w, nil
}

// waitWatched waits for the renderer to exit while watch samples it: the
// sampling stops once the process is a zombie (still unreaped, so its pid
// cannot be reused) and before it is reaped.
func waitWatched(cmd *exec.Cmd, watch *primaryWatch) error {
	var info unix.Siginfo
	// WNOWAIT: wait for the exit but leave the zombie to cmd.Wait.
	for {
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	watch.Stop()
	return cmd.Wait()
}

// Stop ends the sampling and waits for it. After Stop, the check's fields
// are the caller's again.
func (w *primaryWatch) Stop() {
	close(w.stop)
	<-w.done
}

// sample reads the renderer's ids (once), fds and maps. A read that fails
// (the renderer exited) does not count as a sample.
func (w *primaryWatch) sample(proc string, rdev uint64) {
	c := w.c
	if c.RendererCredentials == "" {
		if creds, ok := procCredentials(filepath.Join(proc, "status")); ok {
			c.RendererCredentials = creds
		}
	}
	ents, err := os.ReadDir(filepath.Join(proc, "fd"))
	if err != nil {
		return
	}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(proc, "fd", e.Name()), &st) == nil &&
			st.Mode&unix.S_IFMT == unix.S_IFCHR && uint64(st.Rdev) == rdev && !c.SeenOpen {
			c.SeenOpen, c.SeenAs = true, "fd "+e.Name()
		}
	}
	maps, err := os.ReadFile(filepath.Join(proc, "maps"))
	if err != nil {
		return
	}
	// A mapping of the node shows the path it was opened by (fields 6
	// on); whatever the path, the device number tells.
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") || c.SeenOpen {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(strings.Join(f[5:], " "), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && uint64(st.Rdev) == rdev {
			c.SeenOpen, c.SeenAs = true, "mapping "+l
		}
	}
	c.Samples++
}

// procCredentials reads a process's real ids (and checks that its
// effective, saved and filesystem ids are the same) from its status file.
func procCredentials(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var uid, gid int = -1, -1
	var groups []int
	sameIDs := func(v string) (int, bool) {
		f := strings.Fields(v)
		if len(f) != 4 || f[0] != f[1] || f[0] != f[2] || f[0] != f[3] {
			return -1, false
		}
		n, err := strconv.Atoi(f[0])
		return n, err == nil
	}
	mixed := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "Uid":
			var ok bool
			if uid, ok = sameIDs(v); !ok {
				mixed = true
			}
		case "Gid":
			var ok bool
			if gid, ok = sameIDs(v); !ok {
				mixed = true
			}
		case "Groups":
			for _, g := range strings.Fields(v) {
				if n, err := strconv.Atoi(g); err == nil {
					groups = append(groups, n)
				}
			}
		}
	}
	if uid < 0 && gid < 0 && !mixed {
		return "", false
	}
	s := credString(uid, gid, groups)
	if mixed {
		s += " (real, effective, saved and fs ids differ)"
	}
	return s, true
}
