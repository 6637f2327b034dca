package uevent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The namespace tests run the test binary again in new namespaces (a user
// namespace cannot be entered by a multi-threaded process). childEnv
// carries the request; the child talks JSON lines on stdin and stdout.
const childEnv = "HEAPD_UEVENT_TEST_CHILD"

type childRequest struct {
	Mode      string    // "listen" or "forge-multicast"
	Mechanism Mechanism // for Open
	Wait      time.Duration
}

type childReport struct {
	Mechanism string // Listener.Mechanism
	String    string // Listener.String
	Why       string // netnsWithoutUevents
	Err       string
	Got       bool  // listen: the event with the UUID arrived
	Stats     Stats // forge-multicast
}

// childMain runs the child's job when the test binary was started as one,
// and reports whether it was.
func childMain() bool {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return false
	}
	var req childRequest
	enc := json.NewEncoder(os.Stdout)
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		enc.Encode(childReport{Err: "bad request: " + err.Error()})
		return true
	}
	rep := childReport{Why: netnsWithoutUevents()}
	l, err := Open(&Config{Mechanism: req.Mechanism, Filter: hasUUID})
	if err != nil {
		rep.Err = err.Error()
		enc.Encode(rep)
		return true
	}
	defer l.Close()
	rep.Mechanism, rep.String = l.Mechanism().String(), l.String()
	switch req.Mode {
	case "listen":
		// Say we are bound, then wait for the UUID to listen for.
		enc.Encode(rep)
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil {
			enc.Encode(childReport{Err: "reading the UUID: " + err.Error()})
			return true
		}
		uuid := strings.TrimSpace(line)
		ctx, cancel := context.WithTimeout(context.Background(), req.Wait)
		defer cancel()
		for {
			ev, err := l.Next(ctx)
			if err != nil {
				break
			}
			if ev.Env["SYNTH_UUID"] == uuid {
				rep.Got = true
				break
			}
		}
		rep.Stats = l.Stats()
		enc.Encode(rep)
	case "forge-multicast":
		rep.Err = forgeMulticast(l, req.Wait)
		rep.Stats = l.Stats()
		enc.Encode(rep)
	default:
		rep.Err = "unknown mode " + req.Mode
		enc.Encode(rep)
	}
	return true
}

// forgeMulticast sends a kernel-shaped uevent to multicast group 1 from a
// user socket (root may) and waits until l has dropped it. It returns what
// went wrong, or "".
func forgeMulticast(l *Listener, wait time.Duration) string {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return "forger socket: " + err.Error()
	}
	defer unix.Close(fd)
	forged := msg("change@/devices/virtual/mem/null", "ACTION=change", "DEVPATH=/devices/virtual/mem/null",
		"SUBSYSTEM=mem", "SYNTH_UUID=00000000-0000-4000-8000-000000000000", "SYNTH_ARG_HEAPD=test",
		"MAJOR=1", "MINOR=3", "DEVNAME=null", "SEQNUM=1")
	if err := unix.Sendto(fd, forged, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		return "multicast sendto: " + err.Error()
	}
	deadline := time.Now().Add(wait)
	for l.Stats().NotKernel == 0 {
		if time.Now().After(deadline) {
			return "the forged message was not seen"
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if ev, err := l.Next(ctx); err == nil {
		return "an event was delivered: " + ev.String()
	}
	return ""
}

// child runs the test binary as a child in new namespaces (flags are
// CLONE_NEW*); as user namespace root, it maps to root outside.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *json.Decoder
}

func startChild(t *testing.T, flags uintptr, req childRequest) *child {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if flags&unix.CLONE_NEWUSER != 0 {
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a child in new namespaces (flags %#x): %v", flags, err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: json.NewDecoder(stdout)}
	t.Cleanup(func() {
		c.stdin.Close()
		if err := c.cmd.Wait(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Errorf("child: %v", err)
			}
		}
	})
	return c
}

func (c *child) report(t *testing.T) childReport {
	t.Helper()
	var rep childReport
	if err := c.out.Decode(&rep); err != nil {
		t.Fatalf("child report: %v", err)
	}
	return rep
}
