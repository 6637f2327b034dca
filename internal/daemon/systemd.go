package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenFDsStart is SD_LISTEN_FDS_START: the first passed fd.
const listenFDsStart = 3

// Activated returns the socket systemd passed (socket activation), or
// nil when there is none: LISTEN_PID is not this process or LISTEN_FDS is
// unset. It implements the sd_listen_fds protocol itself: it reads
// LISTEN_PID, LISTEN_FDS and unsets them (and LISTEN_FDNAMES) so children
// do not inherit them. The socket must be an AF_UNIX SOCK_SEQPACKET
// listener (ListenSequentialPacket= in the .socket unit); anything else is
// an error naming what was passed. Extra fds are closed. The returned
// Listener owns fd 3; closing it does not remove the socket file, which
// systemd owns.
func Activated() (*Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q: want a positive number", fds)
	}
	for fd := listenFDsStart + 1; fd < listenFDsStart+n; fd++ {
		unix.Close(fd) // heapd listens on one socket
	}
	fd := listenFDsStart
	unix.CloseOnExec(fd)
	if err := checkSeqpacket(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("socket activation: fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "LISTEN_FD_3")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.New("socket activation: not a Unix socket")
	}
	ul.SetUnlinkOnClose(false)
	return &Listener{UnixListener: ul, Activated: true}, nil
}

func checkSeqpacket(fd int) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_DOMAIN", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_TYPE", err)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ACCEPTCONN", err)
	}
	if dom != unix.AF_UNIX || typ != unix.SOCK_SEQPACKET || acc != 1 {
		return fmt.Errorf("passed socket is domain %d type %d listening=%v; heapd needs a listening AF_UNIX SOCK_SEQPACKET socket (ListenSequentialPacket= in the .socket unit)", dom, typ, acc == 1)
	}
	return nil
}

// Notify sends state ("READY=1", "STOPPING=1", "STATUS=...") to the
// service manager over $NOTIFY_SOCKET, as sd_notify(3) does. Without
// NOTIFY_SOCKET (not under systemd: openrc, runit, a container, a
// terminal) it does nothing and returns false, nil. An abstract socket
// ("@name") works too.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return false, fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q: only Unix socket paths are supported", addr)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}
