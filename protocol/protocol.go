package protocol

import (
	"errors"
	"fmt"
	"math"
)

// Protocol version spoken by this package. A peer whose major version
// differs is refused; minor versions are negotiated down to the smaller.
const (
	VersionMajor = 1
	VersionMinor = 0
)

// Magic opens the body of Hello and HelloReply: the bytes "HEAP" (0x50414548
// read as a little-endian u32), so a client that reached some other
// SOCK_SEQPACKET socket finds out at once.
const Magic uint32 = 0x50414548

// Limits of the wire format. A message beyond any of them is a protocol
// error.
const (
	// HeaderSize is the size of the fixed header that starts every message.
	HeaderSize = 16
	// MaxMessageSize is the largest packet, header included.
	MaxMessageSize = 64 << 10
	// MaxFDs is the most file descriptors one message carries.
	MaxFDs = 16
	// MaxBatch is the most buffers one Allocate asks for (each reply fd is
	// one buffer).
	MaxBatch = MaxFDs
	// MaxString is the longest string field in bytes, unless the field has
	// a smaller limit of its own.
	MaxString = 4096
	// MaxNameLen is the longest heap name, device id, backend or process
	// name.
	MaxNameLen = 255
	// MaxLabelLen is the longest client-chosen buffer label (DMA-BUF names
	// hold 31 bytes).
	MaxLabelLen = 31
	// MaxDevices is the most device ids in one Allocate.
	MaxDevices = 16
	// MaxDimension is the largest image width or height.
	MaxDimension = 16384
	// Unlimited is how a limit field says "no limit".
	Unlimited uint64 = math.MaxUint64
)

// Type identifies a message. Requests have the high bit clear; each reply
// is its request's type with 0x8000 set; Error is 0x8000 itself; events
// are 0xC000 and up.
type Type uint16

// Message types.
const (
	TypeHello     Type = 0x0001
	TypeListHeaps Type = 0x0002
	TypeAllocate  Type = 0x0003
	TypeMyUsage   Type = 0x0004
	TypeSubscribe Type = 0x0005

	TypeError      Type = 0x8000
	TypeHelloReply Type = 0x8001
	TypeHeaps      Type = 0x8002
	TypeAllocated  Type = 0x8003
	TypeUsage      Type = 0x8004
	TypeSubscribed Type = 0x8005

	TypeEvent Type = 0xC001
)

// replyBit marks replies and events.
const replyBit Type = 0x8000

// IsRequest reports whether t is in the request range (sent by clients).
func (t Type) IsRequest() bool { return t&replyBit == 0 }

// String returns the message's name, or its number for unknown types.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeListHeaps:
		return "ListHeaps"
	case TypeAllocate:
		return "Allocate"
	case TypeMyUsage:
		return "MyUsage"
	case TypeSubscribe:
		return "Subscribe"
	case TypeError:
		return "Error"
	case TypeHelloReply:
		return "HelloReply"
	case TypeHeaps:
		return "Heaps"
	case TypeAllocated:
		return "Allocated"
	case TypeUsage:
		return "Usage"
	case TypeSubscribed:
		return "Subscribed"
	case TypeEvent:
		return "Event"
	}
	return fmt.Sprintf("Type(0x%04x)", uint16(t))
}

// Feature is a bit in the feature words of Hello and HelloReply. The server
// answers with the intersection of what the client asked for and what it
// implements; a client uses only features in that answer.
type Feature uint64

// Features of protocol 1.0.
const (
	// FeatureImage: Allocate by image description (ShapeImage).
	FeatureImage Feature = 1 << 0
	// FeatureBatch: Allocate with Count > 1.
	FeatureBatch Feature = 1 << 1
	// FeatureEvents: Subscribe and Event.
	FeatureEvents Feature = 1 << 2
	// FeatureUsage: MyUsage and Usage.
	FeatureUsage Feature = 1 << 3
	// FeatureDeviceSet: Allocate for a set of devices (TargetDevices), and
	// device sets with a heap name.
	FeatureDeviceSet Feature = 1 << 4
)

// AllFeatures is every feature this package can encode; a server offers
// the subset it implements.
const AllFeatures = FeatureImage | FeatureBatch | FeatureEvents | FeatureUsage | FeatureDeviceSet

// Code is a stable numeric error code carried by Error. Codes never change
// meaning; new ones may be added, and a client treats an unknown code like
// CodeInternal. A Code is itself an error, so errors.Is(err, CodeDenied)
// matches any *Error with that code.
type Code uint32

// Error codes.
const (
	// CodeProtocol: malformed message, wrong fd count, unexpected type. The
	// sender closes the connection after it.
	CodeProtocol Code = 1
	// CodeVersion: no common major version. The connection is closed.
	CodeVersion Code = 2
	// CodeHandshake: a request came before Hello, Hello came twice, or
	// no Hello came within the server's handshake timeout. The connection
	// is closed.
	CodeHandshake Code = 3
	// CodeUnknownRequest: the request type is not known to the server.
	// The connection stays open.
	CodeUnknownRequest Code = 4
	// CodeInvalidArgument: a field's value is out of range (size 0, bad
	// count, label too long, an unnegotiated feature used...).
	CodeInvalidArgument Code = 5
	// CodeUnknownHeap: no heap has the name (see ListHeaps).
	CodeUnknownHeap Code = 6
	// CodeNotSupported: understood but not offered (a pixel format or
	// modifier heapd cannot lay out).
	CodeNotSupported Code = 7
	// CodeDenied: policy refuses this peer; the message says which rule
	// and what would allow it.
	CodeDenied Code = 8
	// CodeQuota: the allocation would exceed the peer's quota.
	CodeQuota Code = 9
	// CodeNoMemory: the heap could not supply the memory (ENOMEM).
	CodeNoMemory Code = 10
	// CodeBusy: too many connections or requests; try again later.
	CodeBusy Code = 11
	// CodeInternal: the daemon failed; the message says how.
	CodeInternal Code = 12
	// CodeShuttingDown: the daemon is stopping and takes no new requests.
	CodeShuttingDown Code = 13
	// CodeRateLimited: the peer allocates faster than its policy allows.
	CodeRateLimited Code = 14
	// CodeUnknownDevice: a device id (or driver name) in a device set
	// names no DRM device, or more than one.
	CodeUnknownDevice Code = 15
	// CodeNoHeap: no heap gave memory every device in the set accepted;
	// the message says which device refused which heap at which step.
	CodeNoHeap Code = 16
	// CodeDeviceGone: the heap was retired because its device (or backend)
	// went away; the message names the device. Buffers already handed out
	// stay valid.
	CodeDeviceGone Code = 17
)

// String returns the code's name, as used in docs/protocol.md.
func (c Code) String() string {
	switch c {
	case CodeProtocol:
		return "PROTOCOL"
	case CodeVersion:
		return "VERSION"
	case CodeHandshake:
		return "HANDSHAKE"
	case CodeUnknownRequest:
		return "UNKNOWN_REQUEST"
	case CodeInvalidArgument:
		return "INVALID_ARGUMENT"
	case CodeUnknownHeap:
		return "UNKNOWN_HEAP"
	case CodeNotSupported:
		return "NOT_SUPPORTED"
	case CodeDenied:
		return "DENIED"
	case CodeQuota:
		return "QUOTA"
	case CodeNoMemory:
		return "NO_MEMORY"
	case CodeBusy:
		return "BUSY"
	case CodeInternal:
		return "INTERNAL"
	case CodeShuttingDown:
		return "SHUTTING_DOWN"
	case CodeRateLimited:
		return "RATE_LIMITED"
	case CodeUnknownDevice:
		return "UNKNOWN_DEVICE"
	case CodeDeviceGone:
		return "DEVICE_GONE"
	case CodeNoHeap:
		return "NO_HEAP"
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

// Error makes a Code usable as an errors.Is target.
func (c Code) Error() string { return "heapd: " + c.String() }

// Header starts every message: 16 bytes, little-endian.
type Header struct {
	// Type is the message type.
	Type Type
	// NFDs is the number of file descriptors sent with this packet as
	// SCM_RIGHTS. It must equal what the type carries.
	NFDs uint16
	// Serial pairs a reply with its request: the client picks a non-zero
	// serial per request and the server echoes it. Events, and errors not
	// caused by one request, carry 0.
	Serial uint32
	// Length is the body length: the packet's length less HeaderSize.
	Length uint32
	// Flags is reserved and must be 0.
	Flags uint32
}

// Sentinel errors of the codec. Test with errors.Is.
var (
	// ErrMalformed means bytes that are not a valid message: truncated,
	// oversized, bad lengths, unknown enum values, trailing bytes. Every
	// decoding error wraps it.
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrFDMismatch means the fds received with a message differ from what
	// its header and type say. It wraps ErrMalformed.
	ErrFDMismatch = fmt.Errorf("%w: file descriptor count mismatch", ErrMalformed)
	// ErrUnknownType means a well-framed message of a type this package
	// does not know (perhaps from a later protocol version). It wraps
	// ErrMalformed; a server answers an unknown request type with
	// CodeUnknownRequest and keeps the connection.
	ErrUnknownType = fmt.Errorf("%w: unknown message type", ErrMalformed)
)

// Error is the body of an Error message, and the Go error a client returns
// for it. errors.Is(err, CodeX) matches on the code.
type Error struct {
	Code    Code
	Message string
}

// Error renders "heapd: DENIED: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return "heapd: " + e.Code.String()
	}
	return "heapd: " + e.Code.String() + ": " + e.Message
}

// Is matches a Code target with the same value.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
