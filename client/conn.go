package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heapd/heapd/protocol"
)

// conn is one connection and its reader goroutine, which hands each reply
// to the call waiting for its serial.
type conn struct {
	pc   *protocol.Conn
	info ServerInfo
	done chan struct{} // closed when the reader has exited

	mu      sync.Mutex
	serial  uint32
	pending map[uint32]chan result
	err     error // why the connection is dead; nil while alive
}

type result struct {
	m   protocol.Message
	fds []int
}

func dial(ctx context.Context, path string, features protocol.Feature) (*conn, error) {
	pc, err := dialSocket(ctx, path)
	if err != nil {
		return nil, err
	}
	info, err := handshake(ctx, pc, features)
	if err != nil {
		pc.Close()
		return nil, err
	}
	cc := &conn{pc: pc, info: info, done: make(chan struct{}), serial: 1, pending: map[uint32]chan result{}}
	go cc.reader()
	return cc, nil
}

func (cc *conn) isDead() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

// close marks the connection dead with err and closes the socket; the
// reader then fails every pending call.
func (cc *conn) close(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	cc.mu.Unlock()
	cc.pc.Close()
}

func (cc *conn) reader() {
	defer close(cc.done)
	for {
		h, m, fds, err := cc.pc.Recv()
		if err != nil {
			cc.fail(err)
			return
		}
		if h.Serial == 0 {
			protocol.CloseFDs(fds)
			if e, ok := m.(*protocol.Error); ok {
				// A connection-level error: the daemon closes next.
				cc.fail(e)
				return
			}
			continue // events are not read on a call connection
		}
		cc.mu.Lock()
		ch := cc.pending[h.Serial]
		delete(cc.pending, h.Serial)
		cc.mu.Unlock()
		if ch == nil {
			protocol.CloseFDs(fds) // the caller gave up (context)
			continue
		}
		ch <- result{m: m, fds: fds}
	}
}

// fail ends every pending call with err.
func (cc *conn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			cc.err = pe
		} else {
			cc.err = fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
	}
	pending := cc.pending
	cc.pending = map[uint32]chan result{}
	cc.mu.Unlock()
	for _, ch := range pending {
		close(ch)
	}
	cc.pc.Close()
}

// call sends m and waits for the reply. sent reports whether the request
// may have reached the daemon.
func (cc *conn) call(ctx context.Context, m protocol.Message) (protocol.Message, []int, bool, error) {
	// A context that is already done sends nothing: below, a reply that
	// is ready at the same moment could win the select.
	if err := ctx.Err(); err != nil {
		return nil, nil, false, err
	}
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return nil, nil, false, err
	}
	cc.serial++
	if cc.serial == 0 {
		cc.serial = 1
	}
	serial := cc.serial
	cc.pending[serial] = ch
	cc.mu.Unlock()

	dl, _ := ctx.Deadline()
	if dl.IsZero() {
		dl = time.Now().Add(10 * time.Second) // a full socket buffer never blocks us forever
	}
	cc.pc.SetWriteDeadline(dl)
	if err := cc.pc.Send(serial, m, nil); err != nil {
		cc.forget(serial)
		// The daemon may be gone (EPIPE); either way it did not get this.
		cc.close(fmt.Errorf("%w: %w", ErrDisconnected, err))
		return nil, nil, false, fmt.Errorf("client: sending %s: %w", m.Type(), err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, nil, true, cc.deadErr()
		}
		if e, isErr := r.m.(*protocol.Error); isErr {
			protocol.CloseFDs(r.fds)
			return nil, nil, true, e
		}
		return r.m, r.fds, true, nil
	case <-ctx.Done():
		if !cc.forget(serial) {
			// The reader (or fail) took the call out already: its reply is
			// in ch at once, or ch is closed. Close the fds nobody wants.
			if r, ok := <-ch; ok {
				protocol.CloseFDs(r.fds)
			}
		}
		return nil, nil, true, ctx.Err()
	}
}

// forget removes a pending call, reporting whether it was still pending.
func (cc *conn) forget(serial uint32) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	_, ok := cc.pending[serial]
	delete(cc.pending, serial)
	return ok
}

func (cc *conn) deadErr() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err == nil {
		return ErrDisconnected
	}
	return cc.err
}
