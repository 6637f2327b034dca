package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

// conn is one client connection. Three kinds of goroutines touch it: the
// reader (serveConn, which also handles the quick requests), one handler
// goroutine per Allocate, and the writer. Replies flow through out, whose
// capacity equals the in-flight limit: every request holds a slot from
// receipt until its reply is written, so out never blocks a sender and
// nothing queues without bound.
type conn struct {
	s   *Server
	pc  *protocol.Conn
	id  Identity
	log *slog.Logger

	pidfd int // pins the peer process; -1 if none

	ctx    context.Context // cancelled when the client is gone
	cancel context.CancelFunc

	slots    chan struct{}
	out      chan reply
	handlers sync.WaitGroup

	rmu      sync.Mutex // guards the read deadline against stopReading
	stopping bool

	features protocol.Feature
	hello    bool

	emu      sync.Mutex
	mask     protocol.EventMask
	events   []protocol.Event
	overflow bool
	seq      uint64
	evSignal chan struct{}
}

// reply is one message for the writer. bufs are closed once sent (or
// dropped); slot says whether it ends a request's in-flight slot.
type reply struct {
	serial uint32
	m      protocol.Message
	bufs   []*dmabuf.Buffer
	handed func() // called once bufs are closed (Reservation.Handed)
	slot   bool
	last   bool // close the connection after sending
}

func (s *Server) serveConn(uc *net.UnixConn) {
	p, err := peerIdentity(uc, s.cfg.ProcRoot)
	if err != nil {
		// Answer before closing (BUSY when heapd is out of fds, as under
		// a flood, which is when this happens): a client must not be
		// left with a bare EOF.
		s.log.Warn("connection refused: no peer credentials", "err", err)
		pc := protocol.NewConn(uc)
		_ = pc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_ = pc.Send(0, toWire(fmt.Errorf("identifying the connecting process: %w", err)), nil)
		drainRefused(pc)
		pc.Close()
		return
	}
	c := &conn{
		s:        s,
		pc:       protocol.NewConn(uc),
		id:       p.id,
		pidfd:    p.pidfd,
		slots:    make(chan struct{}, s.cfg.MaxInFlight),
		out:      make(chan reply, s.cfg.MaxInFlight+1),
		evSignal: make(chan struct{}, 1),
	}
	c.log = s.log.With("uid", c.id.UID, "pid", c.id.PID, "comm", c.id.Comm)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer func() {
		c.cancel()
		c.drain()
		c.pc.Close()
		closePIDFD(c.pidfd)
		// fds were freed: if the reserve was given up while they were
		// short, take it back now rather than at the next accept.
		s.reserve.take()
	}()
	if err := s.admit(c); err != nil {
		c.log.Warn("connection refused", "err", err)
		_ = c.pc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_ = c.pc.Send(0, toWire(err), nil)
		drainRefused(c.pc)
		return
	}
	defer s.forget(c)
	s.cfg.Metrics.ClientConnected(1)
	defer s.cfg.Metrics.ClientConnected(-1)
	c.log.Debug("connected", "gid", c.id.GID, "groups", c.id.Groups, "pidfd", c.id.PIDSource)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writer()
	}()
	c.reader()
	// No more requests will be read. If the client is gone nobody waits
	// for the replies in progress: cancel them. Either way wait for them,
	// then let the writer drain what is queued and stop.
	c.handlers.Wait()
	close(c.out)
	<-writerDone
	c.log.Debug("disconnected")
}

// drain discards requests still unread (closing any fds they carry)
// before the socket is closed: closing a Unix socket with unread data
// makes the kernel reset the connection, and the client would then lose
// the replies already queued for it. Bounded, so a client that keeps
// sending cannot hold the connection open.
func (c *conn) drain() { drainConn(c.pc) }

// drainConn is drain for any connection.
func drainConn(pc *protocol.Conn) {
	rc, err := pc.UnixConn().SyscallConn()
	if err != nil {
		return
	}
	_ = pc.SetReadDeadline(time.Time{})
	buf := make([]byte, protocol.MaxMessageSize+1)
	oob := make([]byte, unix.CmsgSpace((protocol.MaxFDs+1)*4))
	_ = rc.Read(func(fd uintptr) bool {
		for range 1024 {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			if oobn > 0 {
				if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
					for _, cm := range cmsgs {
						fds, _ := unix.ParseUnixRights(&cm)
						protocol.CloseFDs(fds)
					}
				}
			}
			if err != nil || n == 0 && oobn == 0 {
				break
			}
		}
		return true
	})
}

// refuseWait bounds how long drainRefused waits for a refused client's
// first message.
const refuseWait = 50 * time.Millisecond

// drainRefused is drainConn for a connection refused before it was
// served: it first waits up to refuseWait for the client's first message
// (its Hello, sent right after connecting, which may not have arrived
// yet). Otherwise the Hello could land just before the close, and
// closing a socket with unread data resets it: the client would see
// ECONNRESET instead of the refusal sent to it.
func drainRefused(pc *protocol.Conn) {
	rc, err := pc.UnixConn().SyscallConn()
	if err != nil {
		return
	}
	_ = pc.SetReadDeadline(time.Now().Add(refuseWait))
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		_, _, _, _, err := unix.Recvmsg(int(fd), b[:], nil, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(err, unix.EAGAIN) // data, EOF or an error: stop waiting
	})
	drainConn(pc)
}

// stopReading makes the reader return at its next read (server shutdown).
func (c *conn) stopReading() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.stopping = true
	_ = c.pc.SetReadDeadline(time.Now())
}

func (c *conn) setReadDeadline(t time.Time) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.stopping {
		_ = c.pc.SetReadDeadline(t)
	}
}

func (c *conn) isStopping() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.stopping
}

// acquire takes an in-flight slot, waiting while the connection has
// MaxInFlight requests in progress.
func (c *conn) acquire() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// send queues a reply that ends a request (releasing its slot when sent).
func (c *conn) send(serial uint32, m protocol.Message, bufs []*dmabuf.Buffer) {
	c.out <- reply{serial: serial, m: m, bufs: bufs, slot: true}
}

// sendHanded is send with a function to call once bufs are closed.
func (c *conn) sendHanded(serial uint32, m protocol.Message, bufs []*dmabuf.Buffer, handed func()) {
	c.out <- reply{serial: serial, m: m, bufs: bufs, handed: handed, slot: true}
}

func (c *conn) reader() {
	c.setReadDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	for {
		h, m, fds, err := c.pc.Recv()
		if err != nil && c.hello && errors.Is(err, protocol.ErrUnknownType) && h.Type.IsRequest() {
			// A request of a later protocol version: refuse it, carry on.
			if !c.acquire() {
				return
			}
			c.send(h.Serial, protocol.Errorf(protocol.CodeUnknownRequest, "request type 0x%04x is not served by this heapd (%s)", uint16(h.Type), c.s.cfg.Version), nil)
			continue
		}
		if err != nil {
			c.readFailed(h, err)
			return
		}
		// No request carries fds in protocol 1: Decode has checked that
		// the header and the type agree, so fds is empty here.
		protocol.CloseFDs(fds)
		if !h.Type.IsRequest() {
			c.fatal(h.Serial, protocol.Errorf(protocol.CodeProtocol, "%s is not a request", h.Type))
			return
		}
		if !c.acquire() {
			return
		}
		if c.isStopping() {
			// Read while waiting for a slot, but the server is stopping:
			// say so rather than start it or drop it silently.
			c.send(h.Serial, protocol.Errorf(protocol.CodeShuttingDown, "heapd is shutting down"), nil)
			return
		}
		if !c.hello {
			hello, ok := m.(*protocol.Hello)
			if !ok {
				c.fatal(h.Serial, protocol.Errorf(protocol.CodeHandshake, "%s before Hello: every connection starts with Hello", h.Type))
				return
			}
			if !c.handleHello(h.Serial, hello) {
				return
			}
			c.setReadDeadline(time.Time{})
			continue
		}
		switch m := m.(type) {
		case *protocol.Hello:
			c.fatal(h.Serial, protocol.Errorf(protocol.CodeHandshake, "Hello sent twice"))
			return
		case *protocol.ListHeaps:
			c.send(h.Serial, c.s.heapsReply(), nil)
		case *protocol.MyUsage:
			u, err := c.usage()
			c.reply(h.Serial, u, err)
		case *protocol.Subscribe:
			sub, err := c.subscribe(m)
			c.reply(h.Serial, sub, err)
		case *protocol.Allocate:
			c.handlers.Add(1)
			go func() {
				defer c.handlers.Done()
				msg, bufs, handed := c.allocate(m)
				c.sendHanded(h.Serial, msg, bufs, handed)
			}()
		default:
			// A request type this package decodes but the server does not
			// serve (none today); answered, not fatal.
			c.send(h.Serial, protocol.Errorf(protocol.CodeUnknownRequest, "request %s is not served by this heapd", h.Type), nil)
		}
	}
}

// reply sends m, or the wire form of err when err is not nil.
func (c *conn) reply(serial uint32, m protocol.Message, err error) {
	if err != nil {
		c.send(serial, toWire(err), nil)
		return
	}
	c.send(serial, m, nil)
}

// readFailed ends the read loop after err.
func (c *conn) readFailed(h protocol.Header, err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, unix.ECONNRESET):
		c.cancel() // the client is gone: abandon work in progress
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.isStopping() {
			return // server shutdown: finish what is in progress
		}
		c.log.Info("disconnecting: no Hello in time", "timeout", c.s.cfg.HandshakeTimeout)
		// Say why before closing: a client whose Hello was merely late
		// (a starved process) must not be left with a bare EOF.
		c.fatal(0, &protocol.Error{Code: protocol.CodeHandshake, Message: fmt.Sprintf("no Hello within %v of connecting", c.s.cfg.HandshakeTimeout)})
	case errors.Is(err, protocol.ErrMalformed):
		c.log.Info("disconnecting: protocol error", "err", err)
		c.fatal(h.Serial, &protocol.Error{Code: protocol.CodeProtocol, Message: err.Error()})
	default:
		c.log.Warn("disconnecting: read error", "err", err)
		c.cancel()
	}
}

// fatal sends a last error and ends the connection. It does not need a
// slot: the reader stops, so at most one such message is ever queued, and
// out has room for it beyond the in-flight slots.
func (c *conn) fatal(serial uint32, e *protocol.Error) {
	c.out <- reply{serial: serial, m: e, last: true}
}

func (c *conn) writer() {
	broken := false
	closeAfter := false
	for {
		select {
		case r, ok := <-c.out:
			if !ok {
				return
			}
			if !broken && !closeAfter {
				if err := c.write(r.serial, r.m, r.bufs); err != nil {
					broken = true
					c.log.Info("disconnecting: cannot write to client", "err", err)
					c.cancel()
					c.pc.Close() // wakes the reader
				}
			}
			for _, b := range r.bufs {
				b.Close()
			}
			if r.handed != nil {
				r.handed()
			}
			if r.slot {
				<-c.slots
			}
			if r.last {
				// The reader has stopped; serveConn closes the socket
				// once the queue is empty.
				closeAfter = true
				c.cancel()
			}
		case <-c.evSignal:
			if broken || closeAfter {
				continue
			}
			for _, ev := range c.takeEvents() {
				if err := c.write(0, &ev, nil); err != nil {
					broken = true
					c.log.Info("disconnecting: cannot write to client", "err", err)
					c.cancel()
					c.pc.Close()
					break
				}
			}
		}
	}
}

// write sends one message within the write timeout.
func (c *conn) write(serial uint32, m protocol.Message, bufs []*dmabuf.Buffer) error {
	var fds []int
	for _, b := range bufs {
		fds = append(fds, b.FD())
	}
	if err := c.pc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return err
	}
	return c.pc.Send(serial, m, fds)
}

// pushEvent queues ev if the connection subscribed to class. Never blocks:
// past EventQueue, events are dropped and one EventOverflow takes their
// place.
func (c *conn) pushEvent(class protocol.EventMask, ev protocol.Event) {
	c.emu.Lock()
	if c.mask&class == 0 {
		c.emu.Unlock()
		return
	}
	if len(c.events) >= c.s.cfg.EventQueue {
		c.overflow = true
	} else {
		c.events = append(c.events, ev)
	}
	c.emu.Unlock()
	select {
	case c.evSignal <- struct{}{}:
	default:
	}
}

// takeEvents empties the queue, numbering the events.
func (c *conn) takeEvents() []protocol.Event {
	c.emu.Lock()
	defer c.emu.Unlock()
	evs := c.events
	c.events = nil
	if c.overflow {
		evs = append(evs, protocol.Event{Kind: protocol.EventOverflow})
		c.overflow = false
	}
	for i := range evs {
		c.seq++
		evs[i].Seq = c.seq
	}
	return evs
}
