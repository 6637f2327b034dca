package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/metrics"
	"github.com/heapd/heapd/protocol"
)

// Heaps is what the server needs of the heap layer; *heap.Registry
// implements it.
type Heaps interface {
	List() []heap.Info
	Problems() []string
	Get(name string) (heap.Heap, error)
	// Allocate serves one buffer of a request by heap name and/or device
	// set; the Allocation's Buffer is owned by the caller.
	Allocate(ctx context.Context, req heap.Request) (*heap.Allocation, error)
}

// refresher is implemented by heap sources that can re-discover
// (*heap.Registry).
type refresher interface{ Refresh() error }

// Config configures a Server. Zero fields take the defaults shown.
type Config struct {
	// Heaps supplies the memory; required. The Server does not close it.
	Heaps Heaps
	// Metrics receives the server's counters; nil means none (every
	// method of a nil *metrics.Metrics does nothing).
	Metrics *metrics.Metrics
	// Logger receives one line per connection and decision; nil discards.
	Logger *slog.Logger
	// Authorizer decides who may allocate what; nil means BuiltinPolicy
	// with the daemon's own uid.
	Authorizer Authorizer
	// Ledger charges allocations; nil means a new Tally.
	Ledger Ledger
	// Version is reported in HelloReply ("heapd 0.1.0"); default "heapd".
	Version string
	// MaxConns bounds open connections (256) and MaxConnsPerUID those of
	// one uid (64). A connection over a limit gets Error BUSY and is closed.
	MaxConns, MaxConnsPerUID int
	// MaxInFlight bounds the requests one connection has in progress (4);
	// further requests wait unread in the socket.
	MaxInFlight int
	// MaxBatch bounds Allocate.Count (protocol.MaxBatch).
	MaxBatch int
	// WriteTimeout is how long a reply may wait for the client to read
	// (5s); a client that stops reading is disconnected, never waited on.
	WriteTimeout time.Duration
	// HandshakeTimeout is how long a new connection may take to send
	// Hello (10s).
	HandshakeTimeout time.Duration
	// ShutdownTimeout is how long Serve waits for in-flight requests when
	// its context ends (10s).
	ShutdownTimeout time.Duration
	// EventQueue bounds the events queued per connection (64); beyond it
	// they are dropped and EventOverflow is sent.
	EventQueue int
	// ProcRoot is where /proc is (tests); default "/proc".
	ProcRoot string
	// Stopping, if set, is called once when Serve begins its graceful
	// shutdown (heapd sends STOPPING=1 to systemd from it).
	Stopping func()
}

// Features is what this server implements.
const Features = protocol.FeatureImage | protocol.FeatureBatch | protocol.FeatureEvents | protocol.FeatureUsage | protocol.FeatureDeviceSet

// Server serves the heapd protocol on a listener. Create it with New; it
// is safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	ids   atomic.Uint64

	mu     sync.Mutex
	conns  map[*conn]struct{}
	perUID map[uint32]int
	known  map[string]heap.Info // heaps as last published, for events

	rescanMu sync.Mutex

	// reserve is given up when accept fails with EMFILE (refuseOutOfFDs)
	// and taken back by Serve and by every connection that closes.
	reserve reserveFD
}

// New returns a Server for cfg. It fails only when cfg.Heaps is nil.
func New(cfg Config) (*Server, error) {
	if cfg.Heaps == nil {
		return nil, errors.New("daemon: Config.Heaps is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = BuiltinPolicy{OwnerUID: uint32(os.Getuid())}
	}
	if cfg.Ledger == nil {
		cfg.Ledger = &Tally{}
	}
	if cfg.Version == "" {
		cfg.Version = "heapd"
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxConns, 256)
	def(&cfg.MaxConnsPerUID, 64)
	def(&cfg.MaxInFlight, 4)
	def(&cfg.MaxBatch, protocol.MaxBatch)
	if cfg.MaxBatch > protocol.MaxBatch {
		cfg.MaxBatch = protocol.MaxBatch
	}
	def(&cfg.EventQueue, 64)
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&cfg.WriteTimeout, 5*time.Second)
	defd(&cfg.HandshakeTimeout, 10*time.Second)
	defd(&cfg.ShutdownTimeout, 10*time.Second)
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		start:  time.Now(),
		conns:  map[*conn]struct{}{},
		perUID: map[uint32]int{},
		known:  map[string]heap.Info{},
	}
	for _, h := range cfg.Heaps.List() {
		s.known[h.Name] = h
	}
	return s, nil
}

// Serve accepts connections on ln until ctx ends, then shuts down
// gracefully: it stops accepting (closing ln), lets every connection
// finish the requests it is working on and send their replies, closes the
// connections, and returns nil. Requests still unread are not served.
// Connections that do not finish within ShutdownTimeout are cut.
// Serve takes ownership of ln. An accept error other than a transient
// one (EMFILE, ENFILE, ECONNABORTED: retried after a pause) ends Serve
// with that error, after the same shutdown.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	var (
		wg       sync.WaitGroup
		stopping atomic.Bool
	)
	errc := make(chan error, 1)
	lnClosed := make(chan struct{})
	stopAccept := context.AfterFunc(ctx, func() {
		stopping.Store(true)
		ln.Close()
		close(lnClosed)
	})
	// However Serve ends, the listener is closed (the close(2) done) when
	// it returns.
	defer func() {
		if stopAccept() {
			ln.Close()
		} else {
			<-lnClosed
		}
	}()
	// The reserve fd is given up when accept fails for want of fds
	// (EMFILE): heapd can then accept one waiting client, tell it BUSY
	// and close it, rather than leave every new client waiting without a
	// word until fds free up.
	s.reserve.take()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer s.reserve.stop()
		backoff := 5 * time.Millisecond
		for {
			uc, err := ln.AcceptUnix()
			if err != nil {
				if stopping.Load() {
					errc <- nil
					return
				}
				if (errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)) && s.refuseOutOfFDs(ln, err) {
					continue
				}
				if isTransientAccept(err) {
					s.log.Warn("accept failed, retrying", "err", err, "pause", backoff)
					time.Sleep(backoff)
					backoff = min(2*backoff, time.Second)
					continue
				}
				errc <- fmt.Errorf("accept: %w", err)
				return
			}
			backoff = 5 * time.Millisecond
			// Given up while fds were short and not yet taken back:
			// take it again now that an accept succeeded.
			s.reserve.take()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveConn(uc)
			}()
		}
	}()
	var err error
	select {
	case err = <-errc:
		// The accept loop ended by itself; make the shutdown below happen.
		ln.Close()
	case <-ctx.Done():
		err = <-errc
	}
	if s.cfg.Stopping != nil {
		s.cfg.Stopping()
	}
	s.shutdown()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("shutdown timeout: cutting connections that are still busy", "timeout", s.cfg.ShutdownTimeout)
		s.forEachConn(func(c *conn) { c.pc.Close() })
		<-done
	}
	return err
}

// shutdown asks every connection to stop reading and finish.
func (s *Server) shutdown() {
	s.forEachConn(func(c *conn) { c.stopReading() })
}

func (s *Server) forEachConn(f func(*conn)) {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		f(c)
	}
}

// admit registers c unless a connection limit is reached.
func (s *Server) admit(c *conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= s.cfg.MaxConns {
		return protocol.Errorf(protocol.CodeBusy, "heapd has %d connections, its limit", len(s.conns))
	}
	if s.perUID[c.id.UID] >= s.cfg.MaxConnsPerUID {
		return protocol.Errorf(protocol.CodeBusy, "uid %d has %d connections, the per-user limit", c.id.UID, s.perUID[c.id.UID])
	}
	s.conns[c] = struct{}{}
	s.perUID[c.id.UID]++
	return nil
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.perUID[c.id.UID]--; s.perUID[c.id.UID] <= 0 {
		delete(s.perUID, c.id.UID)
	}
}

// Conns returns the number of open connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Rescan re-discovers heaps (when the Heaps source can) and sends
// heap-added, heap-removed and heap-changed events to subscribed
// connections. heapd calls it on SIGHUP. Safe for concurrent use.
func (s *Server) Rescan() error {
	s.rescanMu.Lock()
	defer s.rescanMu.Unlock()
	if r, ok := s.cfg.Heaps.(refresher); ok {
		if err := r.Refresh(); err != nil {
			return err
		}
	}
	now := map[string]heap.Info{}
	for _, h := range s.cfg.Heaps.List() {
		now[h.Name] = h
	}
	var evs []protocol.Event
	s.mu.Lock()
	for name, h := range now {
		old, ok := s.known[name]
		switch {
		case !ok:
			evs = append(evs, protocol.Event{Kind: protocol.EventHeapAdded, Name: name})
		case !sameHeap(old, h):
			evs = append(evs, protocol.Event{Kind: protocol.EventHeapChanged, Name: name})
		}
	}
	for name := range s.known {
		if _, ok := now[name]; !ok {
			evs = append(evs, protocol.Event{Kind: protocol.EventHeapRemoved, Name: name})
		}
	}
	s.known = now
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	sortEvents(evs)
	for _, ev := range evs {
		s.log.Info("heap event", "kind", ev.Kind, "heap", ev.Name)
		for _, c := range cs {
			c.pushEvent(protocol.EventsHeaps, ev)
		}
	}
	return nil
}

// sameHeap compares what matters to a client: free CMA changes all the
// time and is not an event.
func sameHeap(a, b heap.Info) bool {
	a.CMAFree, b.CMAFree = 0, 0
	if (a.CPUCached == nil) != (b.CPUCached == nil) || a.CPUCached != nil && *a.CPUCached != *b.CPUCached {
		return false
	}
	a.CPUCached, b.CPUCached = nil, nil
	return a == b
}

func sortEvents(evs []protocol.Event) {
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && (evs[j].Name < evs[j-1].Name); j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

func (s *Server) uptime() time.Duration { return time.Since(s.start) }

// refuseOutOfFDs is called when accept failed with acceptErr (EMFILE or
// ENFILE): it frees the reserve fd, accepts one waiting client, answers
// it BUSY, closes it and takes the reserve again. It reports whether a
// client was refused (otherwise the caller backs off as for any
// transient accept error).
func (s *Server) refuseOutOfFDs(ln *net.UnixListener, acceptErr error) bool {
	if !s.reserve.give() {
		s.reserve.take()
		return false
	}
	defer s.reserve.take()
	// accept(2) fails with EMFILE before it looks at the queue, so there
	// may be no client waiting: do not block with the reserve given up
	// (the next client would be refused for a shortage long gone).
	_ = ln.SetDeadline(time.Now().Add(10 * time.Millisecond))
	uc, err := ln.AcceptUnix()
	_ = ln.SetDeadline(time.Time{})
	if err != nil {
		return false
	}
	s.log.Warn("connection refused: heapd is out of file descriptors", "err", acceptErr)
	pc := protocol.NewConn(uc)
	_ = pc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_ = pc.Send(0, toWire(acceptErr), nil)
	drainRefused(pc)
	pc.Close()
	return true
}

// isTransientAccept reports accept errors that pass: out of fds or memory
// for a moment, or a client that went away before accept returned.
func isTransientAccept(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
