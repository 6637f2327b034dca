package protocol

import (
	"encoding/binary"
	"fmt"
)

// More limits on list fields.
const (
	// MaxHeaps is the most heaps in Heaps and Usage.
	MaxHeaps = 256
	// MaxProblems is the most problem strings in Heaps.
	MaxProblems = 64
	// MaxGroups is the most supplementary groups Usage reports (the daemon
	// reports the first MaxGroups when a peer has more).
	MaxGroups = 1024
)

// Message is one protocol message body. The concrete types are the
// pointer types of this package (*Hello, *Allocate, ...); the set is
// closed.
type Message interface {
	// Type is the message type written in the header.
	Type() Type
	// NumFDs is how many file descriptors travel with the message.
	NumFDs() int
	encode(e *enc) error
	decode(d *dec)
}

// Hello opens every connection (client → server).
type Hello struct {
	Major, Minor uint16
	// Features the client understands and wants.
	Features Feature
}

// HelloReply answers Hello with the negotiated version and features, and
// the server's limits.
type HelloReply struct {
	Major, Minor uint16
	// Features is the intersection of the client's and the server's.
	Features Feature
	// UptimeMillis is how long the daemon has been running.
	UptimeMillis uint64
	// MaxBatch is the largest Count the server accepts in Allocate.
	MaxBatch uint16
	// MaxInFlight is how many requests the server works on at once per
	// connection; further requests wait unread in the socket.
	MaxInFlight uint16
	// MaxMessage is the largest message the server accepts, header
	// included.
	MaxMessage uint32
	// Server names the daemon and its version ("heapd 0.1.0").
	Server string
}

// ListHeaps asks for the published heaps. It has no body.
type ListHeaps struct{}

// HeapFlags describe a heap's memory.
type HeapFlags uint32

// Heap flags.
const (
	HeapContiguous       HeapFlags = 1 << 0
	HeapDeviceImportable HeapFlags = 1 << 1
	HeapCPUCachedKnown   HeapFlags = 1 << 2
	HeapCPUCached        HeapFlags = 1 << 3
)

// HeapInfo is one heap in Heaps: heap.Info on the wire.
type HeapInfo struct {
	Name       string
	Backend    string
	Target     string
	KernelName string
	// Device is the display device id of a scanout heap, else "".
	Device   string
	Note     string
	Flags    HeapFlags
	MaxSize  uint64
	CMATotal uint64
	CMAFree  uint64
}

// Heaps answers ListHeaps.
type Heaps struct {
	Heaps []HeapInfo
	// Problems lists backends that exist but could not be used, with why.
	Problems []string
}

// Target says what an Allocate is for.
type Target uint8

// Allocation targets.
const (
	// TargetHeap allocates from the heap named in Allocate.Heap.
	TargetHeap Target = 1
	// TargetDevices allocates memory every device in Allocate.Devices
	// accepts, from the heap the resolver picks (needs FeatureDeviceSet).
	TargetDevices Target = 2
)

// Shape says how an Allocate describes the buffer.
type Shape uint8

// Allocation shapes.
const (
	// ShapeSize asks for Allocate.Size bytes.
	ShapeSize Shape = 1
	// ShapeImage asks for an image (Allocate.Image); the server picks the
	// layout (needs FeatureImage).
	ShapeImage Shape = 2
)

// ModifierInvalid (DRM_FORMAT_MOD_INVALID) in an image request means "no
// preference": the server chooses the modifier.
const ModifierInvalid uint64 = 0x00ffffffffffffff

// ModifierLinear is DRM_FORMAT_MOD_LINEAR.
const ModifierLinear uint64 = 0

// Image describes a single-plane image to allocate.
type Image struct {
	Width, Height uint32
	// Format is a DRM fourcc code (XR24 is 0x34325258).
	Format uint32
	// Modifier is a DRM format modifier, or ModifierInvalid.
	Modifier uint64
}

// Allocate asks for Count identical buffers.
type Allocate struct {
	Target Target
	Shape  Shape
	// Count is the number of buffers, 1..MaxBatch (more than 1 needs
	// FeatureBatch). All or none are allocated.
	Count uint16
	// Flags is reserved and must be 0.
	Flags uint32
	// Size in bytes, for ShapeSize (0 for ShapeImage).
	Size uint64
	// Image, for ShapeImage (all zero for ShapeSize).
	Image Image
	// Heap is the heap name, for TargetHeap (empty for TargetDevices).
	Heap string
	// Devices are device ids (or driver names) the buffers must import
	// into and, for display devices, be accepted as framebuffers by:
	// required for TargetDevices, optional for TargetHeap (both need
	// FeatureDeviceSet).
	Devices []string
	// Label is an optional client label, at most MaxLabelLen bytes, added
	// to the buffers' debug name where room is left.
	Label string
}

// BufferFlags describe allocated buffers.
type BufferFlags uint16

// Buffer flags.
const (
	// BufferEmulated: sealed memfds, CPU only, not importable by any
	// device.
	BufferEmulated BufferFlags = 1 << 0
	// BufferContiguous: physically contiguous memory.
	BufferContiguous BufferFlags = 1 << 1
	// BufferDeviceImportable: devices can import the buffer (PRIME).
	BufferDeviceImportable BufferFlags = 1 << 2
)

// Layout is where an image lies in a buffer. All zero for ShapeSize.
type Layout struct {
	Width, Height uint32
	Format        uint32
	// Pitch is the row stride in bytes and Offset where row 0 starts.
	Pitch, Offset uint32
	Modifier      uint64
}

// Allocated answers Allocate: len(IDs) identical buffers, whose fds travel
// with the message in the same order as IDs.
type Allocated struct {
	Flags BufferFlags
	// Size is each buffer's real size (the request rounded up to pages).
	Size   uint64
	Layout Layout
	// Heap is the logical name of the heap that supplied the buffers, and
	// Backend its mechanism ("kernel", "udmabuf", "emulated").
	Heap    string
	Backend string
	// Name is the debug name given to the buffers ("heapd:uid1000:weston").
	Name string
	// IDs are the daemon's ids of the buffers (in its logs and ledger).
	IDs []uint64
}

// MyUsage asks what is charged to the caller. It has no body.
type MyUsage struct{}

// UsageFlags qualify a Usage.
type UsageFlags uint32

// Usage flags.
const (
	// UsageAccounted: a ledger follows each buffer's real lifetime, so
	// Bytes and Buffers are what the caller holds now. Without it they
	// are 0 and only the Total counters mean something.
	UsageAccounted UsageFlags = 1 << 0
)

// HeapUsage is the caller's usage and limits on one heap (or heap class).
type HeapUsage struct {
	Heap         string
	Bytes        uint64
	Buffers      uint64
	LimitBytes   uint64
	LimitBuffers uint64
}

// Usage answers MyUsage: who the daemon sees (from the socket, never from
// the client) and what is charged to that uid.
type Usage struct {
	UID, GID uint32
	// PID is the peer's pid in the daemon's pid namespace, 0 if unknown.
	PID    int32
	Groups []uint32
	// Comm is the peer's process name (/proc/PID/comm).
	Comm  string
	Flags UsageFlags
	// Bytes and Buffers are charged now (with UsageAccounted).
	Bytes, Buffers uint64
	// Limits; Unlimited means none.
	LimitBytes, LimitBuffers, MaxAlloc uint64
	// TotalBytes and TotalBuffers are handed out to this uid since the
	// daemon started.
	TotalBytes, TotalBuffers uint64
	Heaps                    []HeapUsage
	// Policy says in words which rule applies to the caller.
	Policy string
}

// EventMask selects event classes in Subscribe.
type EventMask uint32

// Event classes.
const (
	EventsHeaps   EventMask = 1 << 0
	EventsDevices EventMask = 1 << 1
)

// Subscribe replaces the connection's event subscription (0 ends it).
type Subscribe struct{ Mask EventMask }

// Subscribed answers Subscribe with the classes the server will send.
type Subscribed struct{ Mask EventMask }

// EventKind says what happened.
type EventKind uint16

// Event kinds.
const (
	EventHeapAdded     EventKind = 1
	EventHeapRemoved   EventKind = 2
	EventHeapChanged   EventKind = 3
	EventDeviceAdded   EventKind = 4
	EventDeviceRemoved EventKind = 5
	// EventOverflow: events were dropped because the client read too
	// slowly; list again to resynchronise.
	EventOverflow EventKind = 6
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventHeapAdded:
		return "heap-added"
	case EventHeapRemoved:
		return "heap-removed"
	case EventHeapChanged:
		return "heap-changed"
	case EventDeviceAdded:
		return "device-added"
	case EventDeviceRemoved:
		return "device-removed"
	case EventOverflow:
		return "overflow"
	}
	return fmt.Sprintf("EventKind(%d)", uint16(k))
}

// Event is sent unasked (serial 0) to a subscribed connection.
type Event struct {
	// Seq counts events on this connection from 1; a gap never occurs
	// (an overflow is reported as EventOverflow instead).
	Seq  uint64
	Kind EventKind
	// Name is the heap or device the event is about.
	Name string
}

// Type implements Message.
func (*Hello) Type() Type { return TypeHello }

// Type implements Message.
func (*HelloReply) Type() Type { return TypeHelloReply }

// Type implements Message.
func (*ListHeaps) Type() Type { return TypeListHeaps }

// Type implements Message.
func (*Heaps) Type() Type { return TypeHeaps }

// Type implements Message.
func (*Allocate) Type() Type { return TypeAllocate }

// Type implements Message.
func (*Allocated) Type() Type { return TypeAllocated }

// Type implements Message.
func (*MyUsage) Type() Type { return TypeMyUsage }

// Type implements Message.
func (*Usage) Type() Type { return TypeUsage }

// Type implements Message.
func (*Subscribe) Type() Type { return TypeSubscribe }

// Type implements Message.
func (*Subscribed) Type() Type { return TypeSubscribed }

// Type implements Message.
func (*Event) Type() Type { return TypeEvent }

// Type implements Message.
func (*Error) Type() Type { return TypeError }

// NumFDs implements Message.
func (*Hello) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*HelloReply) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*ListHeaps) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Heaps) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Allocate) NumFDs() int { return 0 }

// NumFDs implements Message.
func (m *Allocated) NumFDs() int { return len(m.IDs) }

// NumFDs implements Message.
func (*MyUsage) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Usage) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Subscribe) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Subscribed) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Event) NumFDs() int { return 0 }

// NumFDs implements Message.
func (*Error) NumFDs() int { return 0 }

// New returns an empty message of type t, or nil for an unknown type.
func New(t Type) Message {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypeHelloReply:
		return &HelloReply{}
	case TypeListHeaps:
		return &ListHeaps{}
	case TypeHeaps:
		return &Heaps{}
	case TypeAllocate:
		return &Allocate{}
	case TypeAllocated:
		return &Allocated{}
	case TypeMyUsage:
		return &MyUsage{}
	case TypeUsage:
		return &Usage{}
	case TypeSubscribe:
		return &Subscribe{}
	case TypeSubscribed:
		return &Subscribed{}
	case TypeEvent:
		return &Event{}
	case TypeError:
		return &Error{}
	}
	return nil
}

// Encode returns the packet for m: header and body. It fails, wrapping
// ErrMalformed, when m breaks a limit of the format (a string too long, a
// count out of range, a packet over MaxMessageSize). The fds themselves are
// the caller's to send (Conn.Send does both).
func Encode(serial uint32, m Message) ([]byte, error) {
	return AppendEncode(make([]byte, 0, 256), serial, m)
}

// AppendEncode is Encode appending to b.
func AppendEncode(b []byte, serial uint32, m Message) ([]byte, error) {
	start := len(b)
	e := enc{b: append(b, make([]byte, HeaderSize)...)}
	if err := m.encode(&e); err != nil {
		return b, fmt.Errorf("encoding %s: %w", m.Type(), err)
	}
	n := len(e.b) - start
	if n > MaxMessageSize {
		return b, fmt.Errorf("encoding %s: %w: %d bytes, at most %d allowed", m.Type(), ErrMalformed, n, MaxMessageSize)
	}
	if m.NumFDs() > MaxFDs {
		return b, fmt.Errorf("encoding %s: %w: %d fds, at most %d allowed", m.Type(), ErrMalformed, m.NumFDs(), MaxFDs)
	}
	h := e.b[start:]
	binary.LittleEndian.PutUint16(h[0:], uint16(m.Type()))
	binary.LittleEndian.PutUint16(h[2:], uint16(m.NumFDs()))
	binary.LittleEndian.PutUint32(h[4:], serial)
	binary.LittleEndian.PutUint32(h[8:], uint32(n-HeaderSize))
	binary.LittleEndian.PutUint32(h[12:], 0)
	return e.b, nil
}

// DecodeHeader parses the header at the start of packet and checks it
// against the packet: the body length must be exactly what follows, the
// packet no larger than MaxMessageSize, flags zero, and nfds (the number
// of fds that really arrived) equal to the header's count.
func DecodeHeader(packet []byte, nfds int) (Header, error) {
	if len(packet) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d-byte packet is shorter than the %d-byte header", ErrMalformed, len(packet), HeaderSize)
	}
	if len(packet) > MaxMessageSize {
		return Header{}, fmt.Errorf("%w: %d-byte packet exceeds the %d-byte limit", ErrMalformed, len(packet), MaxMessageSize)
	}
	h := Header{
		Type:   Type(binary.LittleEndian.Uint16(packet[0:])),
		NFDs:   binary.LittleEndian.Uint16(packet[2:]),
		Serial: binary.LittleEndian.Uint32(packet[4:]),
		Length: binary.LittleEndian.Uint32(packet[8:]),
		Flags:  binary.LittleEndian.Uint32(packet[12:]),
	}
	if int64(h.Length) != int64(len(packet)-HeaderSize) {
		return h, fmt.Errorf("%w: %s header says %d body bytes, packet has %d (truncated?)", ErrMalformed, h.Type, h.Length, len(packet)-HeaderSize)
	}
	if h.Flags != 0 {
		return h, fmt.Errorf("%w: %s header flags 0x%x: must be 0", ErrMalformed, h.Type, h.Flags)
	}
	if int(h.NFDs) != nfds {
		return h, fmt.Errorf("%w: %s header says %d fds, %d arrived", ErrFDMismatch, h.Type, h.NFDs, nfds)
	}
	return h, nil
}

// Decode parses one packet that arrived with nfds file descriptors. Any
// violation of the format, including an unknown type, a body shorter or
// longer than its fields, or a fd count the type does not carry, returns
// an error wrapping ErrMalformed and no message; the Header is returned
// whenever it could be read, so a server can answer with the serial. It
// never panics, whatever the input (FuzzDecode checks), and allocates no
// more than the packet's size.
func Decode(packet []byte, nfds int) (Header, Message, error) {
	h, err := DecodeHeader(packet, nfds)
	if err != nil {
		return h, nil, err
	}
	m := New(h.Type)
	if m == nil {
		return h, nil, fmt.Errorf("%w 0x%04x", ErrUnknownType, uint16(h.Type))
	}
	d := dec{b: packet[HeaderSize:]}
	m.decode(&d)
	if err := d.end(); err != nil {
		return h, nil, fmt.Errorf("decoding %s: %w", h.Type, err)
	}
	if m.NumFDs() != nfds {
		return h, nil, fmt.Errorf("decoding %s: %w: carries %d fds, %d arrived", h.Type, ErrFDMismatch, m.NumFDs(), nfds)
	}
	return h, m, nil
}

// --- bodies ---

func (m *Hello) encode(e *enc) error {
	e.u32(Magic)
	e.u16(m.Major)
	e.u16(m.Minor)
	e.u64(uint64(m.Features))
	return nil
}

func (m *Hello) decode(d *dec) {
	if magic := d.u32("magic"); d.err == nil && magic != Magic {
		d.fail("bad magic 0x%08x (want 0x%08x): not a heapd peer", magic, Magic)
	}
	m.Major = d.u16("major")
	m.Minor = d.u16("minor")
	m.Features = Feature(d.u64("features"))
}

func (m *HelloReply) encode(e *enc) error {
	if err := checkStr("server", m.Server, MaxNameLen); err != nil {
		return err
	}
	e.u32(Magic)
	e.u16(m.Major)
	e.u16(m.Minor)
	e.u64(uint64(m.Features))
	e.u64(m.UptimeMillis)
	e.u16(m.MaxBatch)
	e.u16(m.MaxInFlight)
	e.u32(m.MaxMessage)
	e.str(m.Server)
	return nil
}

func (m *HelloReply) decode(d *dec) {
	if magic := d.u32("magic"); d.err == nil && magic != Magic {
		d.fail("bad magic 0x%08x (want 0x%08x): not a heapd peer", magic, Magic)
	}
	m.Major = d.u16("major")
	m.Minor = d.u16("minor")
	m.Features = Feature(d.u64("features"))
	m.UptimeMillis = d.u64("uptime")
	m.MaxBatch = d.u16("max batch")
	m.MaxInFlight = d.u16("max in flight")
	m.MaxMessage = d.u32("max message")
	m.Server = d.str("server", MaxNameLen)
}

func (*ListHeaps) encode(*enc) error { return nil }
func (*ListHeaps) decode(*dec)       {}
func (*MyUsage) encode(*enc) error   { return nil }
func (*MyUsage) decode(*dec)         {}

// minHeapInfo is the smallest encoded HeapInfo: six empty strings and the
// fixed fields.
const minHeapInfo = 6*2 + 4 + 3*8

func (m *Heaps) encode(e *enc) error {
	if len(m.Heaps) > MaxHeaps {
		return fmt.Errorf("%w: %d heaps, at most %d", ErrMalformed, len(m.Heaps), MaxHeaps)
	}
	if len(m.Problems) > MaxProblems {
		return fmt.Errorf("%w: %d problems, at most %d", ErrMalformed, len(m.Problems), MaxProblems)
	}
	for _, h := range m.Heaps {
		for _, f := range []struct {
			what, s string
			max     int
		}{{"heap name", h.Name, MaxNameLen}, {"backend", h.Backend, MaxNameLen}, {"target", h.Target, MaxString},
			{"kernel name", h.KernelName, MaxNameLen}, {"device", h.Device, MaxNameLen}, {"note", h.Note, MaxString}} {
			if err := checkStr(f.what, f.s, f.max); err != nil {
				return err
			}
		}
	}
	for _, p := range m.Problems {
		if err := checkStr("problem", p, MaxString); err != nil {
			return err
		}
	}
	e.u16(uint16(len(m.Heaps)))
	for _, h := range m.Heaps {
		e.str(h.Name)
		e.str(h.Backend)
		e.str(h.Target)
		e.str(h.KernelName)
		e.str(h.Device)
		e.str(h.Note)
		e.u32(uint32(h.Flags))
		e.u64(h.MaxSize)
		e.u64(h.CMATotal)
		e.u64(h.CMAFree)
	}
	e.u16(uint16(len(m.Problems)))
	for _, p := range m.Problems {
		e.str(p)
	}
	return nil
}

func (m *Heaps) decode(d *dec) {
	n := d.count("heap count", MaxHeaps, minHeapInfo)
	if n > 0 {
		m.Heaps = make([]HeapInfo, n)
	}
	for i := range n {
		h := &m.Heaps[i]
		h.Name = d.str("heap name", MaxNameLen)
		h.Backend = d.str("backend", MaxNameLen)
		h.Target = d.str("target", MaxString)
		h.KernelName = d.str("kernel name", MaxNameLen)
		h.Device = d.str("device", MaxNameLen)
		h.Note = d.str("note", MaxString)
		h.Flags = HeapFlags(d.u32("heap flags"))
		h.MaxSize = d.u64("max size")
		h.CMATotal = d.u64("cma total")
		h.CMAFree = d.u64("cma free")
	}
	n = d.count("problem count", MaxProblems, 2)
	if n > 0 {
		m.Problems = make([]string, n)
	}
	for i := range n {
		m.Problems[i] = d.str("problem", MaxString)
	}
}

// Validate checks an Allocate's fields against the format's rules (what
// the decoder enforces too). It does not check negotiated features or
// server limits.
func (m *Allocate) Validate() error {
	switch m.Target {
	case TargetHeap:
		if m.Heap == "" {
			return fmt.Errorf("%w: target heap needs a heap name", ErrMalformed)
		}
	case TargetDevices:
		if m.Heap != "" || len(m.Devices) == 0 {
			return fmt.Errorf("%w: target devices needs at least one device and no heap name", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: unknown target %d", ErrMalformed, m.Target)
	}
	switch m.Shape {
	case ShapeSize:
		if m.Image != (Image{}) {
			return fmt.Errorf("%w: shape size needs the image fields zero", ErrMalformed)
		}
	case ShapeImage:
		if m.Size != 0 {
			return fmt.Errorf("%w: shape image needs size 0", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: unknown shape %d", ErrMalformed, m.Shape)
	}
	if m.Count == 0 || m.Count > MaxBatch {
		return fmt.Errorf("%w: count %d: must be 1..%d", ErrMalformed, m.Count, MaxBatch)
	}
	if m.Flags != 0 {
		return fmt.Errorf("%w: allocate flags 0x%x: must be 0", ErrMalformed, m.Flags)
	}
	if len(m.Devices) > MaxDevices {
		return fmt.Errorf("%w: %d devices, at most %d", ErrMalformed, len(m.Devices), MaxDevices)
	}
	if err := checkStr("heap", m.Heap, MaxNameLen); err != nil {
		return err
	}
	for _, dev := range m.Devices {
		if dev == "" {
			return fmt.Errorf("%w: empty device id", ErrMalformed)
		}
		if err := checkStr("device", dev, MaxNameLen); err != nil {
			return err
		}
	}
	if err := checkStr("label", m.Label, MaxLabelLen); err != nil {
		return err
	}
	for i := 0; i < len(m.Label); i++ {
		if c := m.Label[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: label has control byte 0x%02x", ErrMalformed, c)
		}
	}
	return nil
}

func (m *Allocate) encode(e *enc) error {
	if err := m.Validate(); err != nil {
		return err
	}
	e.u8(uint8(m.Target))
	e.u8(uint8(m.Shape))
	e.u16(m.Count)
	e.u32(m.Flags)
	e.u64(m.Size)
	e.u32(m.Image.Width)
	e.u32(m.Image.Height)
	e.u32(m.Image.Format)
	e.u64(m.Image.Modifier)
	e.str(m.Heap)
	e.u16(uint16(len(m.Devices)))
	for _, dev := range m.Devices {
		e.str(dev)
	}
	e.str(m.Label)
	return nil
}

func (m *Allocate) decode(d *dec) {
	m.Target = Target(d.u8("target"))
	m.Shape = Shape(d.u8("shape"))
	m.Count = d.u16("count")
	m.Flags = d.u32("flags")
	m.Size = d.u64("size")
	m.Image.Width = d.u32("width")
	m.Image.Height = d.u32("height")
	m.Image.Format = d.u32("format")
	m.Image.Modifier = d.u64("modifier")
	m.Heap = d.str("heap", MaxNameLen)
	n := d.count("device count", MaxDevices, 2)
	if n > 0 {
		m.Devices = make([]string, n)
	}
	for i := range n {
		m.Devices[i] = d.str("device", MaxNameLen)
	}
	m.Label = d.str("label", MaxLabelLen)
	if d.err == nil {
		if err := m.Validate(); err != nil {
			d.err = err
		}
	}
}

func (m *Allocated) encode(e *enc) error {
	if len(m.IDs) == 0 || len(m.IDs) > MaxBatch {
		return fmt.Errorf("%w: %d buffers: must be 1..%d", ErrMalformed, len(m.IDs), MaxBatch)
	}
	for _, f := range []struct{ what, s string }{{"heap", m.Heap}, {"backend", m.Backend}, {"name", m.Name}} {
		if err := checkStr(f.what, f.s, MaxNameLen); err != nil {
			return err
		}
	}
	e.u16(uint16(len(m.IDs)))
	e.u16(uint16(m.Flags))
	e.u64(m.Size)
	e.u32(m.Layout.Width)
	e.u32(m.Layout.Height)
	e.u32(m.Layout.Format)
	e.u32(m.Layout.Pitch)
	e.u32(m.Layout.Offset)
	e.u64(m.Layout.Modifier)
	e.str(m.Heap)
	e.str(m.Backend)
	e.str(m.Name)
	for _, id := range m.IDs {
		e.u64(id)
	}
	return nil
}

func (m *Allocated) decode(d *dec) {
	n := int(d.u16("count"))
	if d.err == nil && (n == 0 || n > MaxBatch) {
		d.fail("buffer count %d: must be 1..%d", n, MaxBatch)
	}
	m.Flags = BufferFlags(d.u16("flags"))
	m.Size = d.u64("size")
	m.Layout.Width = d.u32("width")
	m.Layout.Height = d.u32("height")
	m.Layout.Format = d.u32("format")
	m.Layout.Pitch = d.u32("pitch")
	m.Layout.Offset = d.u32("offset")
	m.Layout.Modifier = d.u64("modifier")
	m.Heap = d.str("heap", MaxNameLen)
	m.Backend = d.str("backend", MaxNameLen)
	m.Name = d.str("name", MaxNameLen)
	if d.err != nil {
		return
	}
	if n*8 != len(d.b)-d.off {
		d.fail("%d buffer ids need %d bytes, %d left", n, n*8, len(d.b)-d.off)
		return
	}
	m.IDs = make([]uint64, n)
	for i := range n {
		m.IDs[i] = d.u64("id")
	}
}

func (m *Usage) encode(e *enc) error {
	if len(m.Groups) > MaxGroups {
		return fmt.Errorf("%w: %d groups, at most %d", ErrMalformed, len(m.Groups), MaxGroups)
	}
	if len(m.Heaps) > MaxHeaps {
		return fmt.Errorf("%w: %d heaps, at most %d", ErrMalformed, len(m.Heaps), MaxHeaps)
	}
	if err := checkStr("comm", m.Comm, MaxNameLen); err != nil {
		return err
	}
	for _, h := range m.Heaps {
		if err := checkStr("heap", h.Heap, MaxNameLen); err != nil {
			return err
		}
	}
	if err := checkStr("policy", m.Policy, MaxString); err != nil {
		return err
	}
	e.u32(m.UID)
	e.u32(m.GID)
	e.u32(uint32(m.PID))
	e.u16(uint16(len(m.Groups)))
	for _, g := range m.Groups {
		e.u32(g)
	}
	e.str(m.Comm)
	e.u32(uint32(m.Flags))
	for _, v := range []uint64{m.Bytes, m.Buffers, m.LimitBytes, m.LimitBuffers, m.MaxAlloc, m.TotalBytes, m.TotalBuffers} {
		e.u64(v)
	}
	e.u16(uint16(len(m.Heaps)))
	for _, h := range m.Heaps {
		e.str(h.Heap)
		e.u64(h.Bytes)
		e.u64(h.Buffers)
		e.u64(h.LimitBytes)
		e.u64(h.LimitBuffers)
	}
	e.str(m.Policy)
	return nil
}

func (m *Usage) decode(d *dec) {
	m.UID = d.u32("uid")
	m.GID = d.u32("gid")
	m.PID = int32(d.u32("pid"))
	n := d.count("group count", MaxGroups, 4)
	if n > 0 {
		m.Groups = make([]uint32, n)
	}
	for i := range n {
		m.Groups[i] = d.u32("group")
	}
	m.Comm = d.str("comm", MaxNameLen)
	m.Flags = UsageFlags(d.u32("flags"))
	m.Bytes = d.u64("bytes")
	m.Buffers = d.u64("buffers")
	m.LimitBytes = d.u64("limit bytes")
	m.LimitBuffers = d.u64("limit buffers")
	m.MaxAlloc = d.u64("max alloc")
	m.TotalBytes = d.u64("total bytes")
	m.TotalBuffers = d.u64("total buffers")
	n = d.count("heap count", MaxHeaps, 2+4*8)
	if n > 0 {
		m.Heaps = make([]HeapUsage, n)
	}
	for i := range n {
		h := &m.Heaps[i]
		h.Heap = d.str("heap", MaxNameLen)
		h.Bytes = d.u64("bytes")
		h.Buffers = d.u64("buffers")
		h.LimitBytes = d.u64("limit bytes")
		h.LimitBuffers = d.u64("limit buffers")
	}
	m.Policy = d.str("policy", MaxString)
}

func (m *Subscribe) encode(e *enc) error  { e.u32(uint32(m.Mask)); return nil }
func (m *Subscribe) decode(d *dec)        { m.Mask = EventMask(d.u32("mask")) }
func (m *Subscribed) encode(e *enc) error { e.u32(uint32(m.Mask)); return nil }
func (m *Subscribed) decode(d *dec)       { m.Mask = EventMask(d.u32("mask")) }

func (m *Event) encode(e *enc) error {
	if m.Kind < EventHeapAdded || m.Kind > EventOverflow {
		return fmt.Errorf("%w: unknown event kind %d", ErrMalformed, m.Kind)
	}
	if err := checkStr("name", m.Name, MaxNameLen); err != nil {
		return err
	}
	e.u64(m.Seq)
	e.u16(uint16(m.Kind))
	e.str(m.Name)
	return nil
}

func (m *Event) decode(d *dec) {
	m.Seq = d.u64("seq")
	m.Kind = EventKind(d.u16("kind"))
	if d.err == nil && (m.Kind < EventHeapAdded || m.Kind > EventOverflow) {
		d.fail("unknown event kind %d", m.Kind)
	}
	m.Name = d.str("name", MaxNameLen)
}

func (m *Error) encode(e *enc) error {
	if m.Code == 0 {
		return fmt.Errorf("%w: error code 0", ErrMalformed)
	}
	msg := m.Message
	if len(msg) > MaxString {
		msg = truncate(msg, MaxString)
	}
	if err := checkStr("message", msg, MaxString); err != nil {
		return err
	}
	e.u32(uint32(m.Code))
	e.str(msg)
	return nil
}

func (m *Error) decode(d *dec) {
	m.Code = Code(d.u32("code"))
	if d.err == nil && m.Code == 0 {
		d.fail("error code 0")
	}
	m.Message = d.str("message", MaxString)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}
