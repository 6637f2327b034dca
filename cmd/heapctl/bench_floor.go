package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Message sizes of the floor, about those of heapd's Allocate request and
// Allocated reply.
const (
	floorRequest = 48
	floorReply   = 96
)

// floor is the IPC floor: per worker a SOCK_SEQPACKET socket pair, whose
// far end (a goroutine standing in for a server that does no work)
// answers each request with a reply carrying one fd over SCM_RIGHTS. Both
// ends go through Go's netpoller, as heapd and its client do.
type floor struct {
	fd      *os.File // the fd every reply passes
	clients []*net.UnixConn
	servers []*net.UnixConn
	wg      sync.WaitGroup
}

func (f *floor) setup(n int) (func(), error) {
	var err error
	if f.fd, err = os.Open(os.DevNull); err != nil {
		return nil, err
	}
	for range n {
		c, s, err := seqpacketPair()
		if err != nil {
			f.close()
			return nil, err
		}
		f.clients = append(f.clients, c)
		f.servers = append(f.servers, s)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(s)
		}()
	}
	return func() {}, nil
}

// serve answers until the client end closes.
func (f *floor) serve(s *net.UnixConn) {
	var req [floorRequest]byte
	reply := make([]byte, floorReply)
	rights := unix.UnixRights(int(f.fd.Fd()))
	for {
		if n, _, _, _, err := s.ReadMsgUnix(req[:], nil); err != nil || n == 0 {
			return
		}
		if _, _, err := s.WriteMsgUnix(reply, rights, nil); err != nil {
			return
		}
	}
}

func (f *floor) op(_ context.Context, w int) (func() error, error) {
	c := f.clients[w]
	var req [floorRequest]byte
	var reply [floorReply]byte
	oob := make([]byte, unix.CmsgSpace(4))
	if _, _, err := c.WriteMsgUnix(req[:], nil, nil); err != nil {
		return nil, err
	}
	n, oobn, _, _, err := c.ReadMsgUnix(reply[:], oob)
	if err != nil {
		return nil, err
	}
	if n != floorReply {
		return nil, fmt.Errorf("floor: reply of %d bytes, want %d", n, floorReply)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		r, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, r...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("floor: reply carried %d fds, want 1", len(fds))
	}
	return func() error { return unix.Close(fds[0]) }, nil
}

// close ends the servers and closes every socket and the passed fd.
func (f *floor) close() {
	for _, c := range f.clients {
		c.Close()
	}
	f.wg.Wait()
	for _, s := range f.servers {
		s.Close()
	}
	f.clients, f.servers = nil, nil
	if f.fd != nil {
		f.fd.Close()
		f.fd = nil
	}
}

// seqpacketPair returns the two ends of a SOCK_SEQPACKET socket pair.
func seqpacketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		unix.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "seqpacket")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err == nil {
			uc, ok := c.(*net.UnixConn)
			if !ok {
				c.Close()
				err = errors.New("socketpair: not a unix socket")
			}
			conns[i] = uc
		}
		if err != nil {
			if i == 0 {
				unix.Close(fds[1])
			} else {
				conns[0].Close()
			}
			return nil, nil, err
		}
	}
	return conns[0], conns[1], nil
}
