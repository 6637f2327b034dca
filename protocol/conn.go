package protocol

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Conn sends and receives whole messages over a SOCK_SEQPACKET Unix socket
// ("unixpacket" in package net), with their fds as SCM_RIGHTS. It is the
// one place where the transport's rules are enforced for both sides:
// packets over MaxMessageSize (MSG_TRUNC) and lost fds (MSG_CTRUNC) are
// errors, and every fd that arrives with a message that is rejected, or
// that its type does not carry, is closed before Recv returns.
//
// Send and Recv may be called concurrently with each other; two
// concurrent Sends (or two Recvs) are serialised. Close is idempotent.
type Conn struct {
	c *net.UnixConn

	rmu  sync.Mutex
	rbuf []byte
	oob  []byte

	wmu  sync.Mutex
	wbuf []byte
}

// NewConn wraps c, which must be a "unixpacket" connection. The Conn takes
// ownership of c.
func NewConn(c *net.UnixConn) *Conn {
	return &Conn{
		c:    c,
		rbuf: make([]byte, MaxMessageSize+1), // one spare byte: MSG_TRUNC backup check
		// Room for one more fd than allowed, so a sender exceeding MaxFDs
		// is seen (as a mismatch) rather than silently cut.
		oob: make([]byte, unix.CmsgSpace((MaxFDs+1)*4)),
	}
}

// UnixConn returns the underlying connection (for deadlines and peer
// credentials). It stays owned by the Conn.
func (c *Conn) UnixConn() *net.UnixConn { return c.c }

// SetReadDeadline sets the deadline for Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for Send.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// Close closes the socket. Idempotent.
func (c *Conn) Close() error {
	err := c.c.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Send encodes m with serial and sends it in one packet with fds (which
// must number m.NumFDs()). The caller keeps ownership of fds: the kernel
// duplicates them into the message, so close them after Send whether it
// succeeded or not.
func (c *Conn) Send(serial uint32, m Message, fds []int) error {
	if len(fds) != m.NumFDs() {
		return fmt.Errorf("sending %s: %w: %d fds given, the message carries %d", m.Type(), ErrFDMismatch, len(fds), m.NumFDs())
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := AppendEncode(c.wbuf[:0], serial, m)
	if err != nil {
		return err
	}
	c.wbuf = b
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("sending %s: short write (%d of %d bytes, %d of %d control bytes)", m.Type(), n, len(b), oobn, len(oob))
	}
	return nil
}

// Recv receives one message. On success the fds that came with it are
// returned, owned by the caller (they are close-on-exec). On a decoding
// error every received fd has been closed and the error wraps
// ErrMalformed; the Header is filled in when it could be read, so the
// caller can answer the right serial. io.EOF means the peer closed the
// connection. Other errors come from the socket (deadlines included).
func (c *Conn) Recv() (Header, Message, []int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.rbuf, c.oob)
	fds, perr := parseRights(c.oob[:oobn])
	if err != nil {
		closeFDs(fds)
		return Header{}, nil, nil, err
	}
	if perr != nil {
		closeFDs(fds)
		return Header{}, nil, nil, perr
	}
	if n == 0 && oobn == 0 {
		// SOCK_SEQPACKET delivers a zero-length read only at end of
		// stream (a zero-length packet is not a message either).
		return Header{}, nil, nil, errEOF
	}
	if flags&unix.MSG_CTRUNC != 0 {
		closeFDs(fds)
		return Header{}, nil, nil, fmt.Errorf("%w: control data truncated (MSG_CTRUNC): more than %d fds, or the receiver ran out of fds", ErrFDMismatch, MaxFDs)
	}
	if flags&unix.MSG_TRUNC != 0 || n > MaxMessageSize {
		closeFDs(fds)
		h, _ := DecodeHeader(c.rbuf[:HeaderSize], 0)
		return h, nil, nil, fmt.Errorf("%w: packet larger than %d bytes", ErrMalformed, MaxMessageSize)
	}
	h, m, err := Decode(c.rbuf[:n], len(fds))
	if err != nil {
		closeFDs(fds)
		return h, nil, nil, err
	}
	return h, m, fds, nil
}

// parseRights extracts every fd from SCM_RIGHTS messages in oob. Any fd
// found is returned even with an error, so the caller can close it.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control data: %v", ErrMalformed, os.NewSyscallError("cmsg", err))
	}
	var fds []int
	var errs []error
	for _, cm := range cmsgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			// SCM_CREDENTIALS and friends are not part of the protocol;
			// they carry no fds.
			continue
		}
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	if len(errs) > 0 {
		return fds, fmt.Errorf("%w: SCM_RIGHTS: %v", ErrMalformed, errors.Join(errs...))
	}
	return fds, nil
}

// CloseFDs closes every fd in fds, ignoring errors: for discarding fds
// received with a message nobody will use.
func CloseFDs(fds []int) { closeFDs(fds) }

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// errEOF is io.EOF; named here so Recv's doc and code agree.
var errEOF = io.EOF
