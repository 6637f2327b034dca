package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/protocol"
)

// EnvSocket names the environment variable that overrides the default
// socket path.
const EnvSocket = "HEAPD_SOCKET"

// DefaultSocket is where heapd listens by default.
const DefaultSocket = "/run/heapd/socket"

// Sentinel errors. Errors from the daemon are *protocol.Error values:
// test them with errors.Is(err, protocol.CodeDenied) and so on.
var (
	// ErrNoDaemon means nothing answers on the socket: heapd is not
	// running there (or the socket is not reachable by this user).
	ErrNoDaemon = errors.New("client: heapd is not reachable")
	// ErrDisconnected means the connection was lost while a request was in
	// progress; the request may or may not have been served.
	ErrDisconnected = errors.New("client: connection to heapd lost")
	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("client: closed")
)

// Client talks to heapd. The zero value is ready to use: it connects on
// first use to Socket (or $HEAPD_SOCKET, or DefaultSocket), and connects
// again after the connection is lost (a daemon restart). Requests that
// never reached the daemon are retried once on a new connection; a
// request whose connection broke after it was sent fails with
// ErrDisconnected and is not retried.
//
// A Client is safe for concurrent use; concurrent calls share one
// connection and are answered in any order. Close releases the
// connection (and its reader goroutine): always Close a Client that was
// used.
type Client struct {
	// Socket is the daemon's socket path; empty means $HEAPD_SOCKET, or
	// DefaultSocket when that is unset.
	Socket string
	// Features are the protocol features to ask for; 0 means every
	// feature this package knows.
	Features protocol.Feature

	mu     sync.Mutex
	cc     *conn
	closed bool
}

// SocketPath returns the socket path the Client uses.
func (c *Client) SocketPath() string {
	if c.Socket != "" {
		return c.Socket
	}
	if s := os.Getenv(EnvSocket); s != "" {
		return s
	}
	return DefaultSocket
}

// Close closes the connection. Calls in progress fail with ErrClosed or
// ErrDisconnected; later calls fail with ErrClosed. Idempotent and
// nil-safe.
func (c *Client) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	cc := c.cc
	c.cc, c.closed = nil, true
	c.mu.Unlock()
	if cc != nil {
		cc.close(ErrClosed)
		<-cc.done
	}
	return nil
}

// ServerInfo is what the daemon said in its HelloReply.
type ServerInfo struct {
	// Version names the daemon ("heapd v0.1.0").
	Version string
	// Major and Minor are the negotiated protocol version.
	Major, Minor int
	// Features are the negotiated features.
	Features protocol.Feature
	// Uptime is how long the daemon had been running when this
	// connection was made.
	Uptime time.Duration
	// Connected is when this connection was made.
	Connected time.Time
	// MaxBatch and MaxInFlight are the daemon's limits.
	MaxBatch, MaxInFlight int
}

// Info connects if needed and returns what the daemon said about itself.
func (c *Client) Info(ctx context.Context) (ServerInfo, error) {
	cc, err := c.conn(ctx)
	if err != nil {
		return ServerInfo{}, err
	}
	return cc.info, nil
}

// Heaps lists the heaps the daemon publishes, and the problems it found
// with backends it could not use.
func (c *Client) Heaps(ctx context.Context) ([]protocol.HeapInfo, []string, error) {
	m, _, err := c.call(ctx, &protocol.ListHeaps{})
	if err != nil {
		return nil, nil, err
	}
	h, ok := m.(*protocol.Heaps)
	if !ok {
		return nil, nil, unexpected(m)
	}
	return h.Heaps, h.Problems, nil
}

// Usage asks what the daemon charges to this process's uid, and who the
// daemon sees.
func (c *Client) Usage(ctx context.Context) (*protocol.Usage, error) {
	m, _, err := c.call(ctx, &protocol.MyUsage{})
	if err != nil {
		return nil, err
	}
	u, ok := m.(*protocol.Usage)
	if !ok {
		return nil, unexpected(m)
	}
	return u, nil
}

// Request describes an allocation.
type Request struct {
	// Heap is the heap's name ("system", "contiguous", ...). Exactly one
	// of Heap and Devices is set.
	Heap string
	// Devices asks for memory every listed device can import (device
	// ids). heapd answers NOT_SUPPORTED until its resolver lands.
	Devices []string
	// Size in bytes; or Image, not both.
	Size int64
	// Image describes an image; the daemon picks the layout (LINEAR,
	// pitch aligned to 64 bytes: see docs/protocol.md).
	Image *protocol.Image
	// Count is the number of identical buffers (0 means 1); all or none
	// are allocated.
	Count int
	// Label is added to the buffers' debug name where room is left (at
	// most protocol.MaxLabelLen bytes).
	Label string
}

// Allocation is the answer to Allocate: Count buffers and their common
// description.
type Allocation struct {
	// Buffers are owned by the caller: Close each (or the Allocation).
	Buffers []*dmabuf.Buffer
	// Heap and Backend name the heap that supplied the memory.
	Heap, Backend string
	// Name is the buffers' debug name ("heapd:uid1000:weston").
	Name string
	// Size is each buffer's size in bytes.
	Size int64
	// Layout is the image layout (zero for a plain size).
	Layout protocol.Layout
	// Flags say whether the memory is emulated, contiguous, importable.
	Flags protocol.BufferFlags
	// IDs are the daemon's ids of the buffers.
	IDs []uint64
}

// Emulated reports emulated memory: CPU only, not importable by devices.
func (a *Allocation) Emulated() bool { return a != nil && a.Flags&protocol.BufferEmulated != 0 }

// Close closes every buffer. Nil-safe.
func (a *Allocation) Close() error {
	if a == nil {
		return nil
	}
	var errs []error
	for _, b := range a.Buffers {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// Allocate asks the daemon for buffers. On success every buffer in the
// Allocation is owned by the caller; on error no fd is left open.
func (c *Client) Allocate(ctx context.Context, r Request) (*Allocation, error) {
	count := r.Count
	if count == 0 {
		count = 1
	}
	if count < 0 || count > protocol.MaxBatch {
		return nil, fmt.Errorf("client: count %d: must be 1..%d", r.Count, protocol.MaxBatch)
	}
	m := &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: uint16(count), Heap: r.Heap, Devices: r.Devices, Label: r.Label}
	if len(r.Devices) > 0 {
		m.Target = protocol.TargetDevices
	}
	if r.Image != nil {
		if r.Size != 0 {
			return nil, errors.New("client: Request has both Size and Image")
		}
		m.Shape, m.Image = protocol.ShapeImage, *r.Image
	} else {
		if r.Size <= 0 {
			return nil, fmt.Errorf("client: size %d: must be at least 1 byte", r.Size)
		}
		m.Size = uint64(r.Size)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	resp, fds, err := c.call(ctx, m)
	if err != nil {
		return nil, err
	}
	a, ok := resp.(*protocol.Allocated)
	if !ok {
		protocol.CloseFDs(fds)
		return nil, unexpected(resp)
	}
	out := &Allocation{
		Heap: a.Heap, Backend: a.Backend, Name: a.Name, Size: int64(a.Size),
		Layout: a.Layout, Flags: a.Flags, IDs: a.IDs,
	}
	for i, fd := range fds {
		b, err := dmabuf.New(fd)
		if err != nil {
			protocol.CloseFDs(fds[i:])
			out.Close()
			return nil, fmt.Errorf("client: the daemon sent fd that is not a buffer: %w", err)
		}
		out.Buffers = append(out.Buffers, b)
	}
	if len(out.Buffers) != count {
		out.Close()
		return nil, fmt.Errorf("client: asked for %d buffers, got %d", count, len(out.Buffers))
	}
	return out, nil
}

// Alloc allocates one buffer of size bytes from the named heap. The
// Buffer is owned by the caller.
func (c *Client) Alloc(ctx context.Context, heapName string, size int64) (*dmabuf.Buffer, error) {
	a, err := c.Allocate(ctx, Request{Heap: heapName, Size: size})
	if err != nil {
		return nil, err
	}
	return a.Buffers[0], nil
}

func unexpected(m protocol.Message) error {
	return fmt.Errorf("client: unexpected reply %s: %w", m.Type(), protocol.ErrMalformed)
}

// call sends m and waits for its reply, connecting (again) as needed.
func (c *Client) call(ctx context.Context, m protocol.Message) (protocol.Message, []int, error) {
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		resp, fds, sent, err := cc.call(ctx, m)
		if err == nil {
			return resp, fds, nil
		}
		if cc.isDead() {
			c.drop(cc)
			if !sent && attempt == 0 {
				continue // never reached the daemon: safe to retry
			}
		}
		return nil, nil, err
	}
}

// conn returns the live connection, dialling one if needed.
func (c *Client) conn(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.cc != nil && !c.cc.isDead() {
		return c.cc, nil
	}
	if c.cc != nil {
		old := c.cc
		c.cc = nil
		old.close(ErrDisconnected)
	}
	features := c.Features
	if features == 0 {
		features = protocol.AllFeatures
	}
	cc, err := dial(ctx, c.SocketPath(), features)
	if err != nil {
		return nil, err
	}
	c.cc = cc
	return cc, nil
}

// drop forgets cc if it is still the current connection.
func (c *Client) drop(cc *conn) {
	c.mu.Lock()
	if c.cc == cc {
		c.cc = nil
	}
	c.mu.Unlock()
	cc.close(ErrDisconnected)
}

// dialSocket connects to path, translating "nobody there" into
// ErrNoDaemon.
func dialSocket(ctx context.Context, path string) (*protocol.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w at %s (is heapd running? set %s to use another socket): %w", ErrNoDaemon, path, EnvSocket, err)
		}
		return nil, fmt.Errorf("client: connecting to heapd at %s: %w", path, err)
	}
	return protocol.NewConn(nc.(*net.UnixConn)), nil
}

// handshake sends Hello on pc and reads the HelloReply.
func handshake(ctx context.Context, pc *protocol.Conn, features protocol.Feature) (ServerInfo, error) {
	if dl, ok := ctx.Deadline(); ok {
		pc.SetReadDeadline(dl)
		pc.SetWriteDeadline(dl)
		defer pc.SetReadDeadline(time.Time{})
		defer pc.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()
	if err := pc.Send(1, &protocol.Hello{Major: protocol.VersionMajor, Minor: protocol.VersionMinor, Features: features}, nil); err != nil {
		return ServerInfo{}, fmt.Errorf("client: hello: %w", err)
	}
	_, m, fds, err := pc.Recv()
	protocol.CloseFDs(fds)
	if err != nil {
		if ctx.Err() != nil {
			return ServerInfo{}, ctx.Err()
		}
		return ServerInfo{}, fmt.Errorf("client: hello: %w", err)
	}
	switch m := m.(type) {
	case *protocol.HelloReply:
		return ServerInfo{
			Version: m.Server, Major: int(m.Major), Minor: int(m.Minor), Features: m.Features,
			Uptime: time.Duration(m.UptimeMillis) * time.Millisecond, Connected: time.Now(),
			MaxBatch: int(m.MaxBatch), MaxInFlight: int(m.MaxInFlight),
		}, nil
	case *protocol.Error:
		return ServerInfo{}, m
	}
	return ServerInfo{}, unexpected(m)
}
