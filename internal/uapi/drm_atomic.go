package uapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"structs"
	"unsafe"
)

// Mode setting for a compositor: DRM master, connectors, encoders, CRTCs,
// property blobs, atomic commits and the events the kernel queues on the
// fd (drm/drm.h, drm/drm_mode.h).

// DRMDisplayModeLen is DRM_DISPLAY_MODE_LEN, the size of a mode's name.
const DRMDisplayModeLen = 32

// DRMModeModeInfo is struct drm_mode_modeinfo (68 bytes on every
// architecture). It is also the content of a MODE_ID property blob.
type DRMModeModeInfo struct {
	_          structs.HostLayout
	Clock      uint32 // pixel clock in kHz
	HDisplay   uint16
	HSyncStart uint16
	HSyncEnd   uint16
	HTotal     uint16
	HSkew      uint16
	VDisplay   uint16
	VSyncStart uint16
	VSyncEnd   uint16
	VTotal     uint16
	VScan      uint16
	VRefresh   uint32
	Flags      uint32 // DRM_MODE_FLAG_*
	Type       uint32 // DRM_MODE_TYPE_*
	Name       [DRMDisplayModeLen]byte
}

// DRM_MODE_TYPE_* bits of DRMModeModeInfo.Type and DRM_MODE_FLAG_* bits of
// DRMModeModeInfo.Flags that change the refresh rate.
const (
	DRMModeTypePreferred = 1 << 3
	DRMModeTypeUserDef   = 1 << 5
	DRMModeTypeDriver    = 1 << 6

	DRMModeFlagInterlace = 1 << 4
	DRMModeFlagDblScan   = 1 << 5
)

// DRMModeModeInfoSize is the size of struct drm_mode_modeinfo.
const DRMModeModeInfoSize = 68

// Bytes returns the mode as the kernel lays it out in memory (host byte
// order), the content of a MODE_ID blob.
func (m *DRMModeModeInfo) Bytes() []byte {
	b := make([]byte, DRMModeModeInfoSize)
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(m)), DRMModeModeInfoSize))
	return b
}

// errShortModeInfo is returned by DRMModeModeInfoFromBytes.
var errShortModeInfo = errors.New("uapi: mode blob is not a struct drm_mode_modeinfo")

// DRMModeModeInfoFromBytes decodes a mode laid out by the kernel (a MODE_ID
// blob); b must be exactly DRMModeModeInfoSize bytes.
func DRMModeModeInfoFromBytes(b []byte) (DRMModeModeInfo, error) {
	var m DRMModeModeInfo
	if len(b) != DRMModeModeInfoSize {
		return m, fmt.Errorf("%w: %d bytes, want %d", errShortModeInfo, len(b), DRMModeModeInfoSize)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&m)), DRMModeModeInfoSize), b)
	return m, nil
}

// DRMModeGetConnector is struct drm_mode_get_connector.
type DRMModeGetConnector struct {
	_               structs.HostLayout
	EncodersPtr     uint64
	ModesPtr        uint64
	PropsPtr        uint64
	PropValuesPtr   uint64
	CountModes      uint32
	CountProps      uint32
	CountEncoders   uint32
	EncoderID       uint32 // out: the current encoder
	ConnectorID     uint32
	ConnectorType   uint32 // DRM_MODE_CONNECTOR_*
	ConnectorTypeID uint32
	Connection      uint32 // 1 connected, 2 disconnected, 3 unknown
	MMWidth         uint32
	MMHeight        uint32
	Subpixel        uint32
	Pad             uint32
}

// DRM_MODE_CONNECTOR_* connector types used by name, and the values of
// DRMModeGetConnector.Connection.
const (
	DRMModeConnectorVirtual   = 15
	DRMModeConnectorWriteback = 18

	DRMModeConnected         = 1
	DRMModeDisconnected      = 2
	DRMModeUnknownConnection = 3
)

// DRMModeGetEncoder is struct drm_mode_get_encoder.
type DRMModeGetEncoder struct {
	_              structs.HostLayout
	EncoderID      uint32
	EncoderType    uint32
	CRTCID         uint32
	PossibleCRTCs  uint32
	PossibleClones uint32
}

// DRMModeCRTC is struct drm_mode_crtc (GETCRTC, SETCRTC).
type DRMModeCRTC struct {
	_                structs.HostLayout
	SetConnectorsPtr uint64
	CountConnectors  uint32
	CRTCID           uint32
	FBID             uint32
	X, Y             uint32
	GammaSize        uint32
	ModeValid        uint32
	Mode             DRMModeModeInfo
}

// DRMModeAtomic is struct drm_mode_atomic.
type DRMModeAtomic struct {
	_             structs.HostLayout
	Flags         uint32
	CountObjs     uint32
	ObjsPtr       uint64
	CountPropsPtr uint64
	PropsPtr      uint64
	PropValuesPtr uint64
	Reserved      uint64
	UserData      uint64
}

// Flags of DRMModeAtomic.Flags.
const (
	DRMModePageFlipEvent      = 0x01
	DRMModePageFlipAsync      = 0x02
	DRMModeAtomicTestOnly     = 0x0100
	DRMModeAtomicNonblock     = 0x0200
	DRMModeAtomicAllowModeset = 0x0400
	DRMModeAtomicFlags        = DRMModePageFlipEvent | DRMModePageFlipAsync | DRMModeAtomicTestOnly | DRMModeAtomicNonblock | DRMModeAtomicAllowModeset
)

// DRMModeCreateBlob is struct drm_mode_create_blob.
type DRMModeCreateBlob struct {
	_      structs.HostLayout
	Data   uint64
	Length uint32
	BlobID uint32 // out
}

// DRMModeDestroyBlob is struct drm_mode_destroy_blob.
type DRMModeDestroyBlob struct {
	_      structs.HostLayout
	BlobID uint32
}

// DRMAuth is struct drm_auth.
type DRMAuth struct {
	_     structs.HostLayout
	Magic uint32
}

// Request numbers.
var (
	DRMIoctlSetMaster           = io('d', 0x1e)
	DRMIoctlAuthMagic           = iow('d', 0x11, sizeof[DRMAuth]())
	DRMIoctlModeGetCRTC         = iowr('d', 0xa1, sizeof[DRMModeCRTC]())
	DRMIoctlModeGetEncoder      = iowr('d', 0xa6, sizeof[DRMModeGetEncoder]())
	DRMIoctlModeGetConnector    = iowr('d', 0xa7, sizeof[DRMModeGetConnector]())
	DRMIoctlModeAtomic          = iowr('d', 0xbc, sizeof[DRMModeAtomic]())
	DRMIoctlModeCreatePropBlob  = iowr('d', 0xbd, sizeof[DRMModeCreateBlob]())
	DRMIoctlModeDestroyPropBlob = iowr('d', 0xbe, sizeof[DRMModeDestroyBlob]())
)

// DRMSetMasterCall issues DRM_IOCTL_SET_MASTER on a primary node. The
// kernel allows it to a caller with CAP_SYS_ADMIN, or to the process that
// opened fd when fd was master before; EBUSY means another fd is master.
func DRMSetMasterCall(fd int) error {
	_, err := ioctl(fd, DRMIoctlSetMaster, nil, "DRM_IOCTL_SET_MASTER")
	return err
}

// DRMAuthMagicCall issues DRM_IOCTL_AUTH_MAGIC with magic. Only a master
// may authenticate, and magic 0 is never valid, so with magic 0 the answer
// tells whether fd is master: EINVAL when it is, EACCES when it is not (the
// test libdrm's drmIsMaster makes).
func DRMAuthMagicCall(fd int, magic uint32) error {
	a := DRMAuth{Magic: magic}
	_, err := ioctl(fd, DRMIoctlAuthMagic, unsafe.Pointer(&a), "DRM_IOCTL_AUTH_MAGIC")
	return err
}

// DRMModeGetCRTCCall issues DRM_IOCTL_MODE_GETCRTC for crtcID and returns
// the CRTC's current framebuffer, position and mode (valid when ModeValid
// is 1).
func DRMModeGetCRTCCall(fd int, crtcID uint32) (DRMModeCRTC, error) {
	a := DRMModeCRTC{CRTCID: crtcID}
	if _, err := ioctl(fd, DRMIoctlModeGetCRTC, unsafe.Pointer(&a), "DRM_IOCTL_MODE_GETCRTC"); err != nil {
		return DRMModeCRTC{}, err
	}
	return a, nil
}

// DRMModeGetEncoderCall issues DRM_IOCTL_MODE_GETENCODER for encoderID.
func DRMModeGetEncoderCall(fd int, encoderID uint32) (DRMModeGetEncoder, error) {
	a := DRMModeGetEncoder{EncoderID: encoderID}
	if _, err := ioctl(fd, DRMIoctlModeGetEncoder, unsafe.Pointer(&a), "DRM_IOCTL_MODE_GETENCODER"); err != nil {
		return DRMModeGetEncoder{}, err
	}
	return a, nil
}

// DRMModeGetConnectorCall issues DRM_IOCTL_MODE_GETCONNECTOR. Pointer
// fields of c must point at pinned Go memory the caller keeps alive.
func DRMModeGetConnectorCall(fd int, c *DRMModeGetConnector) error {
	_, err := ioctl(fd, DRMIoctlModeGetConnector, unsafe.Pointer(c), "DRM_IOCTL_MODE_GETCONNECTOR")
	return err
}

// DRMConnectorInfo is the decoded answer of DRM_IOCTL_MODE_GETCONNECTOR.
type DRMConnectorInfo struct {
	DRMModeGetConnector // counts and pointers cleared
	Modes               []DRMModeModeInfo
	Encoders            []uint32
	Props               []uint32
	PropValues          []uint64
}

// DRMModeGetConnectorInfo issues DRM_IOCTL_MODE_GETCONNECTOR for
// connectorID until its lists are complete. With probe, the first call asks
// for no modes, which makes the kernel probe the connector (re-read EDID,
// detect) when fd is DRM master; without probe, or when fd is not master,
// the kernel reports what it last probed (possibly nothing).
func DRMModeGetConnectorInfo(fd int, connectorID uint32, probe bool) (DRMConnectorInfo, error) {
	r := DRMModeGetConnector{ConnectorID: connectorID}
	var one [1]DRMModeModeInfo
	var p runtime.Pinner
	if !probe {
		// A non-zero mode count skips the forced probe (libdrm's
		// drmModeGetConnectorCurrent does the same).
		r.CountModes, r.ModesPtr = 1, userPtr(&p, one[:])
	}
	err := DRMModeGetConnectorCall(fd, &r)
	p.Unpin()
	if err != nil {
		return DRMConnectorInfo{}, err
	}
	for range maxCountRetries {
		out := DRMConnectorInfo{
			Modes:      make([]DRMModeModeInfo, max(r.CountModes, 1)),
			Encoders:   make([]uint32, r.CountEncoders),
			Props:      make([]uint32, r.CountProps),
			PropValues: make([]uint64, r.CountProps),
		}
		var p runtime.Pinner
		a := DRMModeGetConnector{
			ConnectorID: connectorID,
			// Never 0 again: that would probe a second time.
			CountModes: uint32(len(out.Modes)), ModesPtr: userPtr(&p, out.Modes),
			CountEncoders: r.CountEncoders, EncodersPtr: userPtr(&p, out.Encoders),
			CountProps: r.CountProps, PropsPtr: userPtr(&p, out.Props), PropValuesPtr: userPtr(&p, out.PropValues),
		}
		err := DRMModeGetConnectorCall(fd, &a)
		p.Unpin()
		if err != nil {
			return DRMConnectorInfo{}, err
		}
		if a.CountModes <= uint32(len(out.Modes)) && a.CountEncoders <= r.CountEncoders && a.CountProps <= r.CountProps {
			out.Modes = out.Modes[:a.CountModes]
			out.Encoders = out.Encoders[:a.CountEncoders]
			out.Props = out.Props[:a.CountProps]
			out.PropValues = out.PropValues[:a.CountProps]
			a.EncodersPtr, a.ModesPtr, a.PropsPtr, a.PropValuesPtr = 0, 0, 0, 0
			a.CountModes, a.CountEncoders, a.CountProps = 0, 0, 0
			out.DRMModeGetConnector = a
			return out, nil
		}
		r = a
	}
	return DRMConnectorInfo{}, errCountsUnstable("DRM_IOCTL_MODE_GETCONNECTOR")
}

// DRMModeCreatePropBlobCall issues DRM_IOCTL_MODE_CREATEPROPBLOB with a copy
// of data and returns the new blob's ID, which the caller must destroy with
// DRMModeDestroyPropBlobCall (the kernel also destroys it with the fd).
// Empty data gives EINVAL.
func DRMModeCreatePropBlobCall(fd int, data []byte) (uint32, error) {
	var p runtime.Pinner
	defer p.Unpin()
	a := DRMModeCreateBlob{Data: userPtr(&p, data), Length: uint32(len(data))}
	if uint64(len(data)) > 1<<32-1 {
		return 0, fmt.Errorf("uapi: DRM_IOCTL_MODE_CREATEPROPBLOB: %d bytes do not fit a u32 length", len(data))
	}
	if _, err := ioctl(fd, DRMIoctlModeCreatePropBlob, unsafe.Pointer(&a), "DRM_IOCTL_MODE_CREATEPROPBLOB"); err != nil {
		return 0, err
	}
	return a.BlobID, nil
}

// DRMModeDestroyPropBlobCall issues DRM_IOCTL_MODE_DESTROYPROPBLOB. Only the
// fd that created a blob may destroy it (EPERM otherwise); objects whose
// state still uses it keep it alive in the kernel.
func DRMModeDestroyPropBlobCall(fd int, blobID uint32) error {
	a := DRMModeDestroyBlob{BlobID: blobID}
	_, err := ioctl(fd, DRMIoctlModeDestroyPropBlob, unsafe.Pointer(&a), "DRM_IOCTL_MODE_DESTROYPROPBLOB")
	return err
}

// DRMModeAtomicCall issues DRM_IOCTL_MODE_ATOMIC. Pointer fields of a must
// point at pinned Go memory the caller keeps alive; DRMModeAtomicCommit
// does that.
func DRMModeAtomicCall(fd int, a *DRMModeAtomic) error {
	_, err := ioctl(fd, DRMIoctlModeAtomic, unsafe.Pointer(a), "DRM_IOCTL_MODE_ATOMIC")
	return err
}

// DRMAtomicArgs is the content of an atomic commit in Go form: for each
// object in Objs, CountProps says how many of the next entries of Props and
// Values belong to it.
type DRMAtomicArgs struct {
	Flags      uint32
	Objs       []uint32
	CountProps []uint32
	Props      []uint32
	Values     []uint64
	// OutFences are indices into Values of properties whose value is a
	// user pointer to an s32 the kernel writes a sync_file fd into
	// (OUT_FENCE_PTR, WRITEBACK_OUT_FENCE_PTR). Their Values are ignored:
	// DRMModeAtomicCommit points each at its own pinned s32.
	OutFences []int
	UserData  uint64
}

// errBadAtomicArgs reports inconsistent DRMAtomicArgs.
var errBadAtomicArgs = errors.New("uapi: inconsistent atomic commit arguments")

// check validates the list lengths and indices.
func (a *DRMAtomicArgs) check() error {
	if len(a.Objs) != len(a.CountProps) {
		return fmt.Errorf("%w: %d objects, %d property counts", errBadAtomicArgs, len(a.Objs), len(a.CountProps))
	}
	var n uint64
	for _, c := range a.CountProps {
		n += uint64(c)
	}
	if n != uint64(len(a.Props)) || len(a.Props) != len(a.Values) {
		return fmt.Errorf("%w: counts add up to %d, %d properties, %d values", errBadAtomicArgs, n, len(a.Props), len(a.Values))
	}
	for _, i := range a.OutFences {
		if i < 0 || i >= len(a.Values) {
			return fmt.Errorf("%w: out-fence index %d of %d values", errBadAtomicArgs, i, len(a.Values))
		}
	}
	if uint64(len(a.Objs)) > 1<<32-1 {
		return fmt.Errorf("%w: %d objects", errBadAtomicArgs, len(a.Objs))
	}
	return nil
}

// DRMModeAtomicCommit issues DRM_IOCTL_MODE_ATOMIC with a. It returns one
// entry per a.OutFences: the sync_file fd the kernel created (owned by the
// caller) or -1 where it made none (a TEST_ONLY commit, a writeback
// connector without a framebuffer). On error no fd is returned: the kernel
// frees the ones it prepared. a is not modified.
//
// The arrays and the out-fence slots are pinned for the call; the kernel
// writes the slots during the ioctl (first -1, then the fd), never later.
func DRMModeAtomicCommit(fd int, a *DRMAtomicArgs) ([]int, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	values := a.Values
	var slots []int32
	var p runtime.Pinner
	defer p.Unpin()
	if len(a.OutFences) > 0 {
		values = append([]uint64(nil), a.Values...)
		slots = make([]int32, len(a.OutFences))
		p.Pin(&slots[0])
		for k, i := range a.OutFences {
			slots[k] = -1
			values[i] = uint64(uintptr(unsafe.Pointer(&slots[k])))
		}
	}
	c := DRMModeAtomic{
		Flags:         a.Flags,
		CountObjs:     uint32(len(a.Objs)),
		ObjsPtr:       userPtr(&p, a.Objs),
		CountPropsPtr: userPtr(&p, a.CountProps),
		PropsPtr:      userPtr(&p, a.Props),
		PropValuesPtr: userPtr(&p, values),
		UserData:      a.UserData,
	}
	if err := DRMModeAtomicCall(fd, &c); err != nil {
		return nil, err
	}
	fds := make([]int, len(slots))
	for k, s := range slots {
		fds[k] = int(s)
	}
	return fds, nil
}

// DRM event types (struct drm_event.type), and a read buffer size that
// holds any event the kernel queues (it copies only whole events).
const (
	DRMEventVBlank        = 0x01
	DRMEventFlipComplete  = 0x02
	DRMEventCRTCSequence  = 0x03
	DRMEventReadBufferLen = 4096
)

// Sizes of struct drm_event, drm_event_vblank and drm_event_crtc_sequence.
const (
	drmEventHeaderSize   = 8
	drmEventVBlankSize   = 32
	drmEventCRTCSeqSize  = 32
	drmEventMaxPlausible = DRMEventReadBufferLen
)

// DRMEvent is one decoded event read from a DRM fd. VBlank and
// FlipComplete (struct drm_event_vblank) fill UserData, Sec, Usec, Sequence
// and CRTCID; CRTCSequence (struct drm_event_crtc_sequence) fills UserData,
// TimeNS and Sequence. Other types carry only Type and Length.
type DRMEvent struct {
	Type      uint32
	Length    uint32
	UserData  uint64
	Sec, Usec uint32
	TimeNS    int64
	Sequence  uint64
	CRTCID    uint32
}

// errBadEvent reports bytes that are not a sequence of whole events.
var errBadEvent = errors.New("uapi: malformed DRM event")

// DRMParseEvents decodes what a read(2) of a DRM fd returned: whole events,
// each a struct drm_event header {u32 type; u32 length} followed by its
// body, in host byte order. A truncated or impossible event is an error;
// the events before it are returned with it.
func DRMParseEvents(b []byte) ([]DRMEvent, error) {
	var out []DRMEvent
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < drmEventHeaderSize {
			return out, fmt.Errorf("%w: %d trailing bytes", errBadEvent, len(b))
		}
		e := DRMEvent{Type: ne.Uint32(b[0:]), Length: ne.Uint32(b[4:])}
		if e.Length < drmEventHeaderSize || e.Length > drmEventMaxPlausible || int(e.Length) > len(b) {
			return out, fmt.Errorf("%w: type %#x length %d with %d bytes left", errBadEvent, e.Type, e.Length, len(b))
		}
		body := b[:e.Length]
		switch e.Type {
		case DRMEventVBlank, DRMEventFlipComplete:
			if len(body) < drmEventVBlankSize {
				return out, fmt.Errorf("%w: type %#x length %d, want %d", errBadEvent, e.Type, e.Length, drmEventVBlankSize)
			}
			e.UserData = ne.Uint64(body[8:])
			e.Sec, e.Usec = ne.Uint32(body[16:]), ne.Uint32(body[20:])
			e.Sequence = uint64(ne.Uint32(body[24:]))
			e.CRTCID = ne.Uint32(body[28:])
		case DRMEventCRTCSequence:
			if len(body) < drmEventCRTCSeqSize {
				return out, fmt.Errorf("%w: type %#x length %d, want %d", errBadEvent, e.Type, e.Length, drmEventCRTCSeqSize)
			}
			e.UserData = ne.Uint64(body[8:])
			e.TimeNS = int64(ne.Uint64(body[16:]))
			e.Sequence = ne.Uint64(body[24:])
		}
		out = append(out, e)
		b = b[e.Length:]
	}
	return out, nil
}
