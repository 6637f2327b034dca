package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

// execActivatedEnv makes the test binary exec heapd the way systemd's
// socket activation does: LISTEN_PID is the pid heapd will have (exec keeps
// it), LISTEN_FDS=1, the socket already on fd 3. (The VM tier has no shell
// to do this.)
const execActivatedEnv = "HEAPD_TEST_EXEC_ACTIVATED"

func TestMain(m *testing.M) {
	if bin := os.Getenv(execActivatedEnv); bin != "" {
		os.Unsetenv(execActivatedEnv)
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		os.Setenv("LISTEN_FDS", "1")
		err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), os.Environ())
		fmt.Fprintln(os.Stderr, "exec:", err)
		os.Exit(127)
	}
	daemontest.Main(m)
}

// activatedCmd runs heapd with f as its activated socket.
func activatedCmd(t *testing.T, f *os.File, args ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), execActivatedEnv+"="+daemontest.Binary(t))
	return cmd
}

func heapd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out, &out)
	return out.String(), err
}

func TestFlags(t *testing.T) {
	if out, err := heapd(t, "--version"); err != nil || !strings.HasPrefix(out, "heapd ") {
		t.Errorf("--version: %v %q", err, out)
	}
	if out, err := heapd(t, "--help"); err != nil || !strings.Contains(out, "--socket") && !strings.Contains(out, "-socket") {
		t.Errorf("--help: %v %q", err, out)
	}
	if _, err := heapd(t, "--log-level", "loud"); err == nil {
		t.Error("bad log level accepted")
	}
	if _, err := heapd(t, "extra"); err == nil {
		t.Error("stray argument accepted")
	}
	for _, args := range [][]string{{"--write-timeout", "0"}, {"--handshake-timeout", "-1s"}} {
		if _, err := heapd(t, args...); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("%q: %v, want an error saying it must be positive", args, err)
		}
	}
}

// run in-process: serves until the context ends, then removes its socket.
func TestRunInProcess(t *testing.T) {
	testutil.CheckFDs(t)
	path := filepath.Join(t.TempDir(), "socket")
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--socket", path}, &out, &out) }()
	c := &client.Client{Socket: path}
	var err error
	for range 100 {
		if _, err = c.Info(context.Background()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// A second heapd on a live socket fails with a clear error; the first
// keeps serving. SIGTERM then ends the first with status 0 and STOPPING=1.
func TestLiveSocketRefusedAndSIGTERM(t *testing.T) {
	d := daemontest.Start(t, nil)
	cmd := exec.Command(daemontest.Binary(t), "--socket", d.Socket)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another heapd is running") {
		t.Errorf("second heapd: %v\n%s", err, out)
	}
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatalf("first heapd stopped answering: %v", err)
	}
	d.Signal(syscall.SIGTERM)
	if err := d.WaitNotify("STOPPING=1", 10*time.Second); err != nil {
		t.Errorf("no STOPPING=1: %v", err)
	}
	<-d.Done()
	if d.Err() != nil {
		t.Errorf("exit: %v\n%s", d.Err(), d.Log())
	}
	if _, err := os.Lstat(d.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// Socket activation as systemd does it: the listening socket is fd 3,
// LISTEN_PID is heapd's pid (set by a process that then execs heapd),
// READY=1 arrives on NOTIFY_SOCKET.
func TestSocketActivation(t *testing.T) {
	testutil.CheckFDs(t)
	dir := daemontest.TempDir(t)
	path := filepath.Join(dir, "activated")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notifyPath := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// --socket points elsewhere: an activated heapd must ignore it.
	cmd := activatedCmd(t, f, "--socket", filepath.Join(dir, "unused"))
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+notifyPath)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := nc.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "READY=1") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("READY=1: %v %q\n%s", err, buf[:n], log.String())
	}
	c := &client.Client{Socket: path}
	b, err := c.Alloc(context.Background(), "system", 4096)
	if err != nil {
		t.Error(err)
	} else {
		b.Close()
	}
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v\n%s", err, log.String())
	}
	if _, err := os.Lstat(filepath.Join(dir, "unused")); !errors.Is(err, os.ErrNotExist) {
		t.Error("activated heapd created --socket anyway")
	}
	// systemd owns the socket file: heapd must not remove it.
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("activated heapd removed systemd's socket: %v", err)
	}
	if !strings.Contains(log.String(), "socket passed by systemd") {
		t.Errorf("log does not say activated:\n%s", log.String())
	}
}

// A socket of the wrong type passed by systemd is refused with a hint.
func TestSocketActivationWrongType(t *testing.T) {
	path := filepath.Join(daemontest.TempDir(t), "stream")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := activatedCmd(t, f, "--socket", filepath.Join(filepath.Dir(path), "unused"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ListenSequentialPacket") {
		t.Errorf("stream socket: %v\n%s", err, out)
	}
}
