package daemon

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/internal/testutil"
)

func TestListen(t *testing.T) {
	testutil.CheckFDs(t)
	path := filepath.Join(t.TempDir(), "sub", "socket")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != SocketMode || st.Mode().Type() != os.ModeSocket {
		t.Errorf("socket file: %v %v", st.Mode(), err)
	}
	// A second heapd on the same path is refused by the lock.
	if _, err := Listen(path, nil); !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), "another heapd") {
		t.Errorf("second Listen: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestListenStale(t *testing.T) {
	testutil.CheckFDs(t)
	path := filepath.Join(t.TempDir(), "socket")
	// A crashed server: the socket file stays, nobody listens.
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err != nil {
		t.Fatalf("new socket does not answer: %v", err)
	}
	c.Close()
	l.Close()
}

func TestListenRefusesLiveOrForeign(t *testing.T) {
	testutil.CheckFDs(t)
	dir := t.TempDir()
	live := filepath.Join(dir, "live")
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: live, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if _, err := Listen(live, nil); !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), "live server") {
		t.Errorf("live socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Error("regular file was touched")
	}
}

func TestNotify(t *testing.T) {
	testutil.CheckFDs(t)
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify("READY=1"); ok || err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v %v", ok, err)
	}
	path := filepath.Join(t.TempDir(), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if ok, err := Notify("READY=1\nSTATUS=x"); !ok || err != nil {
		t.Fatalf("Notify: %v %v", ok, err)
	}
	buf := make([]byte, 100)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := nc.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=x" {
		t.Errorf("got %q %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:3")
	if _, err := Notify("READY=1"); err == nil {
		t.Error("vsock address accepted")
	}
}

func TestActivatedNotForUs(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if l, err := Activated(); l != nil || err != nil {
		t.Errorf("LISTEN_PID of another process: %v %v", l, err)
	}
}
