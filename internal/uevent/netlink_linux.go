package uevent

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// kernelGroup is the netlink multicast group the kernel sends uevents to;
// udev re-broadcasts processed events on group 2 in its own format.
const kernelGroup = 1

// recvBufSize holds any uevent: the kernel caps the KEY=VALUE part at
// UEVENT_BUFFER_SIZE (2048) and the header repeats two of its values.
const recvBufSize = 16 << 10

// netlinkSource reads NETLINK_KOBJECT_UEVENT. The fd is non-blocking and
// registered with the runtime's poller, so a blocked read costs no thread
// and closing the *os.File wakes it.
type netlinkSource struct {
	f      *os.File
	rc     syscall.RawConn
	portID uint32
	rcvbuf int // as the kernel reports it (twice the request)
	buf    []byte
}

// openNetlink creates, sizes and binds the socket. The returned source
// owns the fd.
func openNetlink(size int) (*netlinkSource, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent: %w", os.NewSyscallError("socket", err))
	}
	// SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN;
	// SO_RCVBUF is what an unprivileged process gets.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("uevent: %w", os.NewSyscallError("setsockopt SO_RCVBUF", err))
		}
	}
	rcvbuf, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (kernelGroup - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent: %w", os.NewSyscallError("bind", err))
	}
	var portID uint32
	if sa, err := unix.Getsockname(fd); err == nil {
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			portID = nl.Pid
		}
	}
	f := os.NewFile(uintptr(fd), "uevent-netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("uevent: %w", err)
	}
	return &netlinkSource{f: f, rc: rc, portID: portID, rcvbuf: rcvbuf, buf: make([]byte, recvBufSize)}, nil
}

func (s *netlinkSource) next(dst []Event, c *counters) ([]Event, error) {
	var (
		n, flags int
		from     unix.Sockaddr
		rerr     error
	)
	err := s.rc.Read(func(fd uintptr) bool {
		n, _, flags, from, rerr = unix.Recvmsg(int(fd), s.buf, nil, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return dst, err
	}
	switch {
	case rerr == nil:
	case errors.Is(rerr, unix.ENOBUFS):
		// The kernel dropped messages for us; it says so once per
		// overrun, and the socket goes on working.
		c.overflows.Add(1)
		return append(dst, Event{Action: ActionOverflow}), nil
	case errors.Is(rerr, unix.EINTR):
		return dst, nil
	default:
		return dst, os.NewSyscallError("recvmsg", rerr)
	}
	c.received.Add(1)
	// Only the kernel sends with port id 0: the kernel stamps a sender's
	// address from its socket, and user sockets always have a non-zero
	// port id. This drops forged unicast messages (any local process may
	// send one to our port id) and forged multicast ones (root in the
	// initial user namespace may send them to group 1).
	if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
		c.notKernel.Add(1)
		return dst, nil
	}
	if flags&unix.MSG_TRUNC != 0 {
		c.malformed.Add(1)
		return dst, nil
	}
	ev, err := Parse(s.buf[:n])
	if err != nil {
		c.malformed.Add(1)
		return dst, nil
	}
	return append(dst, ev), nil
}

func (s *netlinkSource) close() error         { return s.f.Close() }
func (s *netlinkSource) mechanism() Mechanism { return Netlink }

func (s *netlinkSource) String() string {
	return fmt.Sprintf("netlink uevents (kernel multicast group %d, port %d, receive buffer %d bytes)", kernelGroup, s.portID, s.rcvbuf)
}
