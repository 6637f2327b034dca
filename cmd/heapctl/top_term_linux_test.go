package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/scan"
)

// openPTY returns a pseudo-terminal pair: the master (the terminal
// emulator's end) and the slave (the program's). Where devpts is not
// mounted (the VM tier's /init mounts none), root mounts a private
// instance of it for the test.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	dir := "/dev/pts"
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil && os.Geteuid() == 0 {
		dir = t.TempDir()
		if err := unix.Mount("devpts", dir, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666"); err != nil {
			testutil.Missing(t, fmt.Sprintf("no /dev/ptmx, and mounting devpts: %v (kernel without CONFIG_UNIX98_PTYS?)", err))
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		m, err = os.OpenFile(filepath.Join(dir, "ptmx"), os.O_RDWR|unix.O_NOCTTY, 0)
	}
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("no pseudo-terminals: %v (devpts not mounted?)", err))
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		testutil.Missing(t, fmt.Sprintf("pseudo-terminal %d: %v", n, err))
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 20, Col: 90}); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// syncBuffer collects what the master reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q; it shows:\n%q", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// On a real terminal: raw keys switch views, q quits, and the terminal is
// left exactly as it was (modes, main screen, cursor).
func TestLiveTopOnPTY(t *testing.T) {
	testutil.CheckFDs(t)
	master, slave := openPTY(t)
	defer master.Close()
	defer slave.Close()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if !isTerminal(slave) {
		t.Fatal("the pty slave is not a terminal")
	}

	var screen syncBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()

	done := make(chan error, 1)
	scanner := func(context.Context) (*scan.Snapshot, error) { return testSnapshot(40), nil }
	go func() { done <- liveTop(context.Background(), slave, slave, scanner, viewProcesses, time.Hour) }()
	waitFor(t, &screen, "PID")

	during, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if during.Lflag&(unix.ICANON|unix.ECHO) != 0 || during.Lflag&unix.ISIG == 0 {
		t.Errorf("live view modes: lflag %#o, want ICANON and ECHO off, ISIG on", during.Lflag)
	}
	if _, err := master.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &screen, "INODE")
	if _, err := master.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("q did not quit")
	}
	waitFor(t, &screen, escShowCur+escMainScr)

	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("terminal not restored:\nbefore %+v\nafter  %+v", *before, *after)
	}
	out := screen.String()
	if !strings.HasPrefix(out, escAltScreen+escHideCur) {
		t.Errorf("did not start on the alternate screen: %q", out[:min(len(out), 40)])
	}
	// 20 rows: 40 processes do not fit and are cut with a count.
	if !strings.Contains(out, "more") {
		t.Errorf("no '… N more' on a 20-row terminal")
	}
	slave.Close()
	master.Close()
	<-copied
}
