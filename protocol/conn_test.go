package protocol

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// pair returns two connected SOCK_SEQPACKET Conns and the raw fd of the
// second's peer for sending hand-made packets.
func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *Conn {
		f := os.NewFile(uintptr(fd), "seqpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return NewConn(c.(*net.UnixConn))
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func memfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.MemfdCreate("conn-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestConnSendRecvFDs(t *testing.T) {
	testutil.CheckFDs(t)
	a, b := pair(t)
	fd1, fd2 := memfd(t), memfd(t)
	defer unix.Close(fd1)
	defer unix.Close(fd2)
	m := &Allocated{Size: 4096, Heap: "system", Backend: "emulated", Name: "n", IDs: []uint64{1, 2}}
	if err := a.Send(5, m, []int{fd1, fd2}); err != nil {
		t.Fatal(err)
	}
	h, got, fds, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	defer CloseFDs(fds)
	if h.Serial != 5 || len(fds) != 2 || got.(*Allocated).IDs[1] != 2 {
		t.Errorf("got %+v %+v fds %v", h, got, fds)
	}
	for _, fd := range fds {
		if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d is not close-on-exec", fd)
		}
	}
	if err := a.Send(1, m, []int{fd1}); !errors.Is(err, ErrFDMismatch) {
		t.Errorf("Send with the wrong fd count: %v", err)
	}
}

// Fds sent with a message that does not carry them are closed by Recv.
func TestConnClosesUnexpectedFDs(t *testing.T) {
	testutil.CheckFDs(t)
	a, b := pair(t)
	fd := memfd(t)
	pkt, err := Encode(1, &ListHeaps{})
	if err != nil {
		t.Fatal(err)
	}
	pkt[2] = 1 // header claims one fd, the type carries none
	if _, _, err := a.c.WriteMsgUnix(pkt, unix.UnixRights(fd), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	before := testutil.OpenFDs()
	_, m, fds, err := b.Recv()
	if !errors.Is(err, ErrFDMismatch) || m != nil || fds != nil {
		t.Fatalf("Recv: %v %v %v", m, fds, err)
	}
	if after := testutil.OpenFDs(); len(after) != len(before) {
		t.Errorf("received fd left open: before %v after %v", before, after)
	}
}

// More fds than the receiver has room for: MSG_CTRUNC, an error, and the
// fds that did arrive are closed.
func TestConnCtrunc(t *testing.T) {
	testutil.CheckFDs(t)
	a, b := pair(t)
	var fds []int
	for range MaxFDs + 4 {
		fds = append(fds, memfd(t))
	}
	pkt, _ := Encode(1, &ListHeaps{})
	if _, _, err := a.c.WriteMsgUnix(pkt, unix.UnixRights(fds...), nil); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if _, _, got, err := b.Recv(); !errors.Is(err, ErrFDMismatch) || got != nil {
		t.Fatalf("Recv: %v %v", got, err)
	}
}

func TestConnOversized(t *testing.T) {
	testutil.CheckFDs(t)
	a, b := pair(t)
	if _, _, err := a.c.WriteMsgUnix(make([]byte, MaxMessageSize+100), nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := b.Recv(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Recv: %v", err)
	}
}

func TestConnEOF(t *testing.T) {
	a, b := pair(t)
	a.Close()
	if _, _, _, err := b.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after peer close: %v", err)
	}
}
