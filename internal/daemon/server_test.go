package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// fakeHeap is a heap.Heap over the emulated backend with hooks.
type fakeHeap struct {
	info  heap.Info
	alloc func(ctx context.Context, size int64) error // runs before allocating; nil allows
}

func (f *fakeHeap) Info() heap.Info { return f.info }

func (f *fakeHeap) Alloc(ctx context.Context, size int64, opts heap.AllocOptions) (*dmabuf.Buffer, error) {
	if f.alloc != nil {
		if err := f.alloc(ctx, size); err != nil {
			return nil, err
		}
	}
	return emulated.Alloc(size, opts.Name)
}

// fakeHeaps is a Heaps whose list a test can change.
type fakeHeaps struct {
	mu    sync.Mutex
	heaps []*fakeHeap
}

func (f *fakeHeaps) List() []heap.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []heap.Info
	for _, h := range f.heaps {
		out = append(out, h.info)
	}
	return out
}

func (f *fakeHeaps) Problems() []string { return []string{"udmabuf: /dev/udmabuf missing"} }

func (f *fakeHeaps) Get(name string) (heap.Heap, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.heaps {
		if h.info.Name == name {
			return h, nil
		}
	}
	return nil, heap.ErrUnknownHeap
}

func (f *fakeHeaps) Allocate(ctx context.Context, req heap.Request) (*heap.Allocation, error) {
	if len(req.Devices) > 0 {
		return nil, fmt.Errorf("no DRM device %q: %w", req.Devices[0], heap.ErrUnknownDevice)
	}
	h, err := f.Get(req.Heap)
	if err != nil {
		return nil, err
	}
	size := req.Size
	var layout *drm.Layout
	if img := req.Image; img != nil {
		l, s, err := LinearLayout(protocol.Image{Width: img.Width, Height: img.Height, Format: uint32(img.Format)})
		if err != nil {
			return nil, err
		}
		size = s
		layout = &drm.Layout{Width: l.Width, Height: l.Height, Format: img.Format, Pitch: l.Pitch}
	}
	b, err := h.Alloc(ctx, size, heap.AllocOptions{Name: req.Name})
	if err != nil {
		return nil, err
	}
	return &heap.Allocation{Buffer: b, Heap: req.Heap, Layout: layout}, nil
}

func (f *fakeHeaps) set(hs ...*fakeHeap) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heaps = hs
}

func systemHeap() *fakeHeap {
	return &fakeHeap{info: heap.Info{Name: "system", Backend: heap.BackendEmulated, Target: "memfd"}}
}

type testServer struct {
	*Server
	path  string
	stop  func() error
	heaps *fakeHeaps
}

// start serves cfg (Heaps defaulting to one emulated "system" heap) on a
// temporary socket until the test ends.
func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	fh := &fakeHeaps{}
	if cfg.Heaps == nil {
		fh.set(systemHeap())
		cfg.Heaps = fh
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "socket")
	ln, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, ln.UnixListener) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			serveErr = <-errc
			ln.Close()
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, path: path, stop: stop, heaps: fh}
}

func dialRaw(t *testing.T, path string) *protocol.Conn {
	t.Helper()
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	pc := protocol.NewConn(c.(*net.UnixConn))
	t.Cleanup(func() { pc.Close() })
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return pc
}

func recv(t *testing.T, pc *protocol.Conn) (protocol.Header, protocol.Message, []int) {
	t.Helper()
	h, m, fds, err := pc.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return h, m, fds
}

func roundTrip(t *testing.T, pc *protocol.Conn, serial uint32, m protocol.Message) (protocol.Message, []int) {
	t.Helper()
	if err := pc.Send(serial, m, nil); err != nil {
		t.Fatal(err)
	}
	for {
		h, r, fds := recv(t, pc)
		if h.Type == protocol.TypeEvent {
			continue
		}
		if h.Serial != serial {
			t.Fatalf("reply serial %d, want %d (%s)", h.Serial, serial, h.Type)
		}
		return r, fds
	}
}

func connect(t *testing.T, path string) *protocol.Conn {
	t.Helper()
	pc := dialRaw(t, path)
	r, _ := roundTrip(t, pc, 1, &protocol.Hello{Major: 1, Features: protocol.AllFeatures})
	hr, ok := r.(*protocol.HelloReply)
	if !ok {
		t.Fatalf("hello: %#v", r)
	}
	if hr.Features != Features || hr.Major != 1 || hr.MaxBatch != protocol.MaxBatch {
		t.Errorf("hello reply %+v", hr)
	}
	return pc
}

func wantError(t *testing.T, m protocol.Message, code protocol.Code, contains string) {
	t.Helper()
	e, ok := m.(*protocol.Error)
	if !ok || e.Code != code || !strings.Contains(e.Message, contains) {
		t.Fatalf("got %#v, want %s error mentioning %q", m, code, contains)
	}
}

// wantClosed checks that the server closes the connection.
func wantClosed(t *testing.T, pc *protocol.Conn) {
	t.Helper()
	for {
		_, m, fds, err := pc.Recv()
		protocol.CloseFDs(fds)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("want EOF, got %v", err)
			}
			return
		}
		t.Logf("before close: %#v", m)
	}
}

func TestHandshake(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{})

	pc := dialRaw(t, s.path)
	r, _ := roundTrip(t, pc, 3, &protocol.ListHeaps{})
	wantError(t, r, protocol.CodeHandshake, "before Hello")
	wantClosed(t, pc)

	pc = dialRaw(t, s.path)
	r, _ = roundTrip(t, pc, 1, &protocol.Hello{Major: 2, Minor: 7})
	wantError(t, r, protocol.CodeVersion, "client asked for 2.7")
	wantClosed(t, pc)

	pc = connect(t, s.path)
	r, _ = roundTrip(t, pc, 2, &protocol.Hello{Major: 1})
	wantError(t, r, protocol.CodeHandshake, "twice")
	wantClosed(t, pc)

	// Features are the intersection; unnegotiated ones are refused.
	pc = dialRaw(t, s.path)
	r, _ = roundTrip(t, pc, 1, &protocol.Hello{Major: 1, Minor: 9, Features: protocol.FeatureImage | 1<<40})
	if hr := r.(*protocol.HelloReply); hr.Features != protocol.FeatureImage || hr.Minor != 0 {
		t.Errorf("negotiated %+v", hr)
	}
	r, _ = roundTrip(t, pc, 2, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 2, Size: 4096, Heap: "system"})
	wantError(t, r, protocol.CodeInvalidArgument, "batch feature")
	r, _ = roundTrip(t, pc, 3, &protocol.MyUsage{})
	wantError(t, r, protocol.CodeInvalidArgument, "usage feature")

	// A handshake that never comes times out.
	s2 := start(t, Config{HandshakeTimeout: 100 * time.Millisecond})
	wantClosed(t, dialRaw(t, s2.path))
}

func TestMalformed(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{})
	for _, tc := range []struct {
		name string
		pkt  func() []byte
		fds  bool
	}{
		{"garbage", func() []byte { return []byte("GET / HTTP/1.0\r\n\r\n") }, false},
		{"truncated", func() []byte { b, _ := protocol.Encode(2, &protocol.ListHeaps{}); return append(b, 1) }, false},
		{"fds on a request", func() []byte {
			b, _ := protocol.Encode(2, &protocol.ListHeaps{})
			b[2] = 1
			return b
		}, true},
		{"reply type", func() []byte { b, _ := protocol.Encode(2, &protocol.Subscribed{}); return b }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := connect(t, s.path)
			var oob []byte
			if tc.fds {
				fd, err := unix.MemfdCreate("stray", unix.MFD_CLOEXEC)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				oob = unix.UnixRights(fd)
			}
			if _, _, err := pc.UnixConn().WriteMsgUnix(tc.pkt(), oob, nil); err != nil {
				t.Fatal(err)
			}
			_, m, _ := recv(t, pc)
			wantError(t, m, protocol.CodeProtocol, "")
			wantClosed(t, pc)
		})
	}
	// An unknown request type (a later version's) is refused, not fatal.
	pc := connect(t, s.path)
	b, _ := protocol.Encode(5, &protocol.ListHeaps{})
	b[0] = 0x42
	if _, _, err := pc.UnixConn().WriteMsgUnix(b, nil, nil); err != nil {
		t.Fatal(err)
	}
	h, m, _ := recv(t, pc)
	wantError(t, m, protocol.CodeUnknownRequest, "0x0042")
	if h.Serial != 5 {
		t.Errorf("serial %d", h.Serial)
	}
	r, _ := roundTrip(t, pc, 6, &protocol.ListHeaps{})
	if hs := r.(*protocol.Heaps); len(hs.Heaps) != 1 || len(hs.Problems) != 1 {
		t.Errorf("heaps %+v", hs)
	}
}

func TestAllocate(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{})
	pc := connect(t, s.path)
	r, fds := roundTrip(t, pc, 2, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeImage, Count: 3,
		Image: protocol.Image{Width: 100, Height: 10, Format: 0x34325258}, Heap: "system", Label: "a:b c"})
	a, ok := r.(*protocol.Allocated)
	if !ok {
		t.Fatalf("%#v", r)
	}
	defer protocol.CloseFDs(fds)
	if len(fds) != 3 || len(a.IDs) != 3 || a.Layout.Pitch != 448 || a.Size < 4480 || a.Flags&protocol.BufferEmulated == 0 {
		t.Errorf("allocated %+v fds %v", a, fds)
	}
	if !strings.HasPrefix(a.Name, "heapd:uid0:daemon.test:a_b_c") && os.Getuid() == 0 {
		t.Errorf("name %q", a.Name)
	}
	for _, fd := range fds {
		b, err := dmabuf.New(fd)
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.Stat()
		if err != nil || st.Name != a.Name {
			t.Errorf("buffer name %q (%v), want %q", st.Name, err, a.Name)
		}
		b.Close()
	}
	r, _ = roundTrip(t, pc, 3, &protocol.MyUsage{})
	u := r.(*protocol.Usage)
	if u.TotalBuffers != 3 || u.Flags&protocol.UsageAccounted != 0 || u.LimitBytes != protocol.Unlimited || u.PID != int32(os.Getpid()) ||
		len(u.Heaps) != 1 || !strings.Contains(u.Policy, "built-in") {
		t.Errorf("usage %+v", u)
	}
	// Kernel errors become codes.
	s.heaps.set(&fakeHeap{info: heap.Info{Name: "system"}, alloc: func(context.Context, int64) error { return unix.ENOMEM }})
	r, _ = roundTrip(t, pc, 4, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 1, Size: 1, Heap: "system"})
	wantError(t, r, protocol.CodeNoMemory, "")
}

// A batch is all or nothing: when the third buffer fails, the first two
// are closed and the ledger reservation is cancelled.
func TestBatchAllOrNothing(t *testing.T) {
	testutil.CheckFDs(t)
	led := &countingLedger{}
	s := start(t, Config{Ledger: led})
	var n atomic.Int32
	s.heaps.set(&fakeHeap{info: heap.Info{Name: "system"}, alloc: func(context.Context, int64) error {
		if n.Add(1) == 3 {
			return unix.ENOMEM
		}
		return nil
	}})
	pc := connect(t, s.path)
	r, fds := roundTrip(t, pc, 2, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 4, Size: 4096, Heap: "system"})
	wantError(t, r, protocol.CodeNoMemory, "")
	if len(fds) != 0 || led.reserved.Load() != 1 || led.cancelled.Load() != 1 || led.committed.Load() != 0 {
		t.Errorf("fds %v, ledger %d/%d/%d", fds, led.reserved.Load(), led.cancelled.Load(), led.committed.Load())
	}
}

type countingLedger struct {
	Tally
	reserved, cancelled, committed atomic.Int32
}

func (l *countingLedger) Reserve(owner *Identity, req AllocRequest, _ Limits) (Reservation, error) {
	l.reserved.Add(1)
	return &countingReservation{l: l}, nil
}

type countingReservation struct{ l *countingLedger }

func (r *countingReservation) Commit([]*dmabuf.Buffer, []uint64) error {
	r.l.committed.Add(1)
	return nil
}
func (r *countingReservation) Cancel() { r.l.cancelled.Add(1) }

type denyAll struct{}

func (denyAll) AuthorizeAlloc(context.Context, *Identity, AllocRequest) (Limits, error) {
	return Limits{}, protocol.Errorf(protocol.CodeDenied, "rule 2 denies")
}
func (denyAll) Describe(context.Context, *Identity) (string, Limits) {
	return "deny all", Limits{}
}

func TestDenied(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{Authorizer: denyAll{}})
	pc := connect(t, s.path)
	r, _ := roundTrip(t, pc, 2, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 1, Size: 4096, Heap: "system"})
	wantError(t, r, protocol.CodeDenied, "rule 2 denies")
	r, _ = roundTrip(t, pc, 3, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 1, Size: 4096, Heap: "nope"})
	wantError(t, r, protocol.CodeUnknownHeap, "")
	// A device set is refused before the resolver allocates anything to
	// probe with: a denied peer cannot make heapd allocate at all.
	r, _ = roundTrip(t, pc, 4, &protocol.Allocate{Target: protocol.TargetDevices, Shape: protocol.ShapeSize, Count: 1, Size: 4096, Devices: []string{"vkms"}})
	wantError(t, r, protocol.CodeDenied, "rule 2 denies")
}

func TestBuiltinPolicy(t *testing.T) {
	p := BuiltinPolicy{OwnerUID: 500}
	cma := AllocRequest{Heap: heap.Info{Name: "contiguous", Properties: heap.Properties{Contiguous: true}}, Size: 1, Count: 1}
	sys := AllocRequest{Heap: heap.Info{Name: "system"}, Size: 1, Count: 1}
	for _, tc := range []struct {
		uid  uint32
		req  AllocRequest
		deny bool
	}{{0, cma, false}, {500, cma, false}, {1000, cma, true}, {1000, sys, false}, {65534, sys, false}} {
		_, err := p.AuthorizeAlloc(context.Background(), &Identity{UID: tc.uid}, tc.req)
		if (err != nil) != tc.deny || tc.deny && (!errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), "policy file")) {
			t.Errorf("uid %d %s: %v", tc.uid, tc.req.Heap.Name, err)
		}
	}
}

// A connection over the limits gets BUSY and is closed.
func TestConnectionLimits(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{MaxConns: 2})
	connect(t, s.path)
	connect(t, s.path)
	pc := dialRaw(t, s.path)
	h, m, _ := recv(t, pc)
	wantError(t, m, protocol.CodeBusy, "limit")
	if h.Serial != 0 {
		t.Errorf("serial %d", h.Serial)
	}
	wantClosed(t, pc)

	s2 := start(t, Config{MaxConnsPerUID: 1})
	connect(t, s2.path)
	_, m, _ = recv(t, dialRaw(t, s2.path))
	wantError(t, m, protocol.CodeBusy, "per-user")
}

// A refused client whose Hello comes a moment after it connected still
// gets the BUSY: heapd waits for the Hello before closing, as closing
// with it unread would reset the connection and lose the refusal.
func TestRefusedLateHello(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{MaxConns: 1})
	connect(t, s.path)
	for i := range 5 {
		pc := dialRaw(t, s.path)
		time.Sleep(refuseWait / 5)
		if err := pc.Send(1, &protocol.Hello{Major: 1}, nil); err != nil {
			t.Fatalf("connection %d: Hello %v after heapd refused it: heapd closed before the Hello came", i, refuseWait/5)
		}
		_, m, _ := recv(t, pc)
		wantError(t, m, protocol.CodeBusy, "limit")
		wantClosed(t, pc)
	}
}

// At most MaxInFlight requests of one connection run at once; on
// shutdown the ones in progress finish and are answered, then the
// connection closes.
func TestInFlightAndGracefulShutdown(t *testing.T) {
	testutil.CheckFDs(t)
	var running, peak atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	heaps := &fakeHeaps{}
	heaps.set(&fakeHeap{info: heap.Info{Name: "system"}, alloc: func(ctx context.Context, _ int64) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		entered <- struct{}{}
		<-release
		return nil
	}})
	s := start(t, Config{Heaps: heaps, MaxInFlight: 2})
	pc := connect(t, s.path)
	for i := range 4 {
		if err := pc.Send(uint32(10+i), &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 1, Size: 4096, Heap: "system"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	<-entered
	time.Sleep(100 * time.Millisecond)
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()
	time.Sleep(100 * time.Millisecond) // shutdown has begun, requests still blocked
	close(release)
	got, stopping := 0, 0
	for {
		_, m, fds, err := pc.Recv()
		if err != nil {
			t.Logf("end: %v", err)
			break
		}
		protocol.CloseFDs(fds)
		switch m := m.(type) {
		case *protocol.Allocated:
			got++
		case *protocol.Error:
			if m.Code == protocol.CodeShuttingDown {
				stopping++
			}
		}
	}
	// The third request was read while waiting for a slot: it is refused
	// with SHUTTING_DOWN; the fourth was never read.
	if got != 2 || stopping != 1 {
		t.Errorf("%d allocations and %d SHUTTING_DOWN answered during shutdown, want 2 and 1", got, stopping)
	}
	if err := <-stopped; err != nil {
		t.Error(err)
	}
}

// A client that stops reading is cut off after the write timeout and
// does not hold up anyone else.
func TestSlowReader(t *testing.T) {
	testutil.CheckFDs(t)
	big := heap.Info{Name: "system", Note: strings.Repeat("n", protocol.MaxString)}
	heaps := &fakeHeaps{}
	var hs []*fakeHeap
	for i := range 10 {
		h := &fakeHeap{info: big}
		h.info.Name = "h" + string(rune('a'+i))
		hs = append(hs, h)
	}
	heaps.set(hs...)
	s := start(t, Config{Heaps: heaps, WriteTimeout: 200 * time.Millisecond})
	slow := connect(t, s.path)
	go func() {
		for i := range 500 {
			if slow.Send(uint32(100+i), &protocol.ListHeaps{}, nil) != nil {
				return
			}
		}
	}()
	fast := connect(t, s.path)
	deadline := time.Now().Add(5 * time.Second)
	for s.Conns() != 1 && time.Now().Before(deadline) {
		if r, _ := roundTrip(t, fast, 7, &protocol.ListHeaps{}); r.Type() != protocol.TypeHeaps {
			t.Fatalf("fast client: %#v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Conns(); n != 1 {
		t.Fatalf("%d connections, want the slow one cut", n)
	}
	wantClosed(t, slow)
}

func TestEvents(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{EventQueue: 3})
	pc := connect(t, s.path)
	r, _ := roundTrip(t, pc, 2, &protocol.Subscribe{Mask: protocol.EventsHeaps | 1<<7})
	if r.(*protocol.Subscribed).Mask != protocol.EventsHeaps {
		t.Errorf("subscribed %#v", r)
	}
	sys := systemHeap()
	changed := systemHeap()
	changed.info.Note = "now different"
	s.heaps.set(sys, &fakeHeap{info: heap.Info{Name: "contiguous", Properties: heap.Properties{Contiguous: true}}})
	if err := s.Rescan(); err != nil {
		t.Fatal(err)
	}
	s.heaps.set(changed)
	if err := s.Rescan(); err != nil {
		t.Fatal(err)
	}
	var got []protocol.Event
	for len(got) < 3 {
		_, m, _ := recv(t, pc)
		got = append(got, *m.(*protocol.Event))
	}
	want := []protocol.Event{{Seq: 1, Kind: protocol.EventHeapAdded, Name: "contiguous"},
		{Seq: 2, Kind: protocol.EventHeapRemoved, Name: "contiguous"}, {Seq: 3, Kind: protocol.EventHeapChanged, Name: "system"}}
	// The second rescan's two events may come in either order.
	if got[0] != want[0] || len(got) != 3 || !(got[1].Kind+got[2].Kind == protocol.EventHeapRemoved+protocol.EventHeapChanged) {
		t.Errorf("events %+v, want %+v", got, want)
	}

	// Unsubscribed: nothing more.
	roundTrip(t, pc, 3, &protocol.Subscribe{})
	s.heaps.set(sys)
	s.Rescan()
	r, _ = roundTrip(t, pc, 4, &protocol.ListHeaps{})
	if r.Type() != protocol.TypeHeaps {
		t.Errorf("got %#v after unsubscribing", r)
	}
}

// Past EventQueue, events collapse into one overflow event and sequence
// numbers stay gapless.
func TestEventOverflow(t *testing.T) {
	c := &conn{s: &Server{cfg: Config{EventQueue: 3}}, mask: protocol.EventsHeaps, evSignal: make(chan struct{}, 1)}
	for range 10 {
		c.pushEvent(protocol.EventsHeaps, protocol.Event{Kind: protocol.EventHeapChanged, Name: "x"})
	}
	c.pushEvent(protocol.EventsDevices, protocol.Event{Kind: protocol.EventDeviceAdded, Name: "not subscribed"})
	got := c.takeEvents()
	want := []protocol.Event{{Seq: 1, Kind: protocol.EventHeapChanged, Name: "x"}, {Seq: 2, Kind: protocol.EventHeapChanged, Name: "x"},
		{Seq: 3, Kind: protocol.EventHeapChanged, Name: "x"}, {Seq: 4, Kind: protocol.EventOverflow}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := c.takeEvents(); len(got) != 0 {
		t.Errorf("queue not emptied: %v", got)
	}
}

func anyConn(s *Server) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		return c
	}
	return nil
}

// Closing a client releases everything the daemon kept for it.
func TestClientCloseReleases(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{})
	for range 5 {
		pc := connect(t, s.path)
		roundTrip(t, pc, 2, &protocol.Subscribe{Mask: protocol.EventsHeaps})
		// Leave a request in flight as the client goes away.
		pc.Send(3, &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: 16, Size: 1 << 20, Heap: "system"}, nil)
		pc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Conns(); n != 0 {
		t.Errorf("%d connections left", n)
	}
}

func TestIdentity(t *testing.T) {
	testutil.CheckFDs(t)
	s := start(t, Config{})
	pc := connect(t, s.path)
	r, _ := roundTrip(t, pc, 2, &protocol.MyUsage{})
	u := r.(*protocol.Usage)
	if u.UID != uint32(os.Getuid()) || u.GID != uint32(os.Getgid()) || u.PID != int32(os.Getpid()) || u.Comm != "daemon.test" {
		t.Errorf("identity %+v", u)
	}
	c := anyConn(s.Server)
	if c.id.PIDSource == "" {
		t.Errorf("no pidfd source: %+v", c.id)
	}
	groups, _ := os.Getgroups()
	if len(groups) != len(u.Groups) {
		t.Errorf("groups %v, want %v", u.Groups, groups)
	}
}

func TestBufferName(t *testing.T) {
	for _, tc := range []struct {
		id    Identity
		label string
		want  string
	}{
		{Identity{UID: 1000, Comm: "weston"}, "", "heapd:uid1000:weston"},
		{Identity{UID: 1000, Comm: "gst:launch 1"}, "fb", "heapd:uid1000:gst_launch_1:fb"},
		{Identity{UID: 4294967295, Comm: "a-very-long-name"}, "label", "heapd:uid4294967295:a-very-long"},
		{Identity{UID: 0}, "", "heapd:uid0:unknown"},
	} {
		if got := tc.id.BufferName(tc.label, 31); got != tc.want {
			t.Errorf("%+v %q: got %q, want %q", tc.id, tc.label, got, tc.want)
		}
	}
}

func TestLinearLayout(t *testing.T) {
	for _, tc := range []struct {
		img   protocol.Image
		pitch uint32
		size  int64
		code  protocol.Code
	}{
		{protocol.Image{Width: 640, Height: 480, Format: 0x34325258}, 2560, 2560 * 480, 0},
		{protocol.Image{Width: 641, Height: 1, Format: 0x34325258, Modifier: protocol.ModifierInvalid}, 2624, 2624, 0},
		{protocol.Image{Width: 1, Height: 1, Format: 0x36314752}, 64, 64, 0}, // RG16
		{protocol.Image{Width: 16384, Height: 16384, Format: 0x38345258}, 131072, 131072 * 16384, 0},
		{protocol.Image{Width: 0, Height: 1, Format: 0x34325258}, 0, 0, protocol.CodeInvalidArgument},
		{protocol.Image{Width: 16385, Height: 1, Format: 0x34325258}, 0, 0, protocol.CodeInvalidArgument},
		{protocol.Image{Width: 16, Height: 16, Format: 0x3231564e}, 0, 0, protocol.CodeNotSupported},
		{protocol.Image{Width: 16, Height: 16, Format: 0x34325258, Modifier: 1}, 0, 0, protocol.CodeNotSupported},
	} {
		l, size, err := LinearLayout(tc.img)
		if tc.code != 0 {
			if !errors.Is(err, tc.code) {
				t.Errorf("%+v: %v, want %s", tc.img, err, tc.code)
			}
			continue
		}
		if err != nil || l.Pitch != tc.pitch || size != tc.size || l.Modifier != protocol.ModifierLinear || l.Offset != 0 {
			t.Errorf("%+v: %+v %d %v", tc.img, l, size, err)
		}
	}
}

func TestToWire(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code protocol.Code
	}{
		{heap.ErrUnknownHeap, protocol.CodeUnknownHeap},
		{heap.ErrInvalidSize, protocol.CodeInvalidArgument},
		{os.NewSyscallError("ioctl", unix.ENOMEM), protocol.CodeNoMemory},
		{context.Canceled, protocol.CodeShuttingDown},
		{errors.New("boom"), protocol.CodeInternal},
		{protocol.Errorf(protocol.CodeQuota, "q"), protocol.CodeQuota},
	} {
		if got := toWire(tc.err).Code; got != tc.code {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.code)
		}
	}
}
