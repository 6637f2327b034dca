package drm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// Mode is a display mode (struct drm_mode_modeinfo): timings in pixels and
// lines, the pixel clock in kHz.
type Mode struct {
	Name       string `json:"name"`
	Clock      uint32 `json:"clock_khz"`
	HDisplay   uint16 `json:"hdisplay"`
	HSyncStart uint16 `json:"hsync_start"`
	HSyncEnd   uint16 `json:"hsync_end"`
	HTotal     uint16 `json:"htotal"`
	HSkew      uint16 `json:"hskew,omitempty"`
	VDisplay   uint16 `json:"vdisplay"`
	VSyncStart uint16 `json:"vsync_start"`
	VSyncEnd   uint16 `json:"vsync_end"`
	VTotal     uint16 `json:"vtotal"`
	VScan      uint16 `json:"vscan,omitempty"`
	// VRefresh is the kernel's rounded refresh rate in Hz; Refresh
	// computes the exact one.
	VRefresh uint32 `json:"vrefresh"`
	Flags    uint32 `json:"flags"` // DRM_MODE_FLAG_*
	Type     uint32 `json:"type"`  // DRM_MODE_TYPE_*
}

// modeFromUAPI converts the kernel's struct. The name's last byte is
// always the kernel's NUL: a blob without one (not from the kernel) has
// its name cut at 31 bytes, as uapi cuts it, so decoding and encoding
// agree.
func modeFromUAPI(m uapi.DRMModeModeInfo) Mode {
	return Mode{
		Name: cString(m.Name[:uapi.DRMDisplayModeLen-1]), Clock: m.Clock,
		HDisplay: m.HDisplay, HSyncStart: m.HSyncStart, HSyncEnd: m.HSyncEnd, HTotal: m.HTotal, HSkew: m.HSkew,
		VDisplay: m.VDisplay, VSyncStart: m.VSyncStart, VSyncEnd: m.VSyncEnd, VTotal: m.VTotal, VScan: m.VScan,
		VRefresh: m.VRefresh, Flags: m.Flags, Type: m.Type,
	}
}

// uapi converts to the kernel's struct; a name longer than 31 bytes is cut
// (the kernel keeps a NUL at the end).
func (m Mode) uapi() uapi.DRMModeModeInfo {
	u := uapi.DRMModeModeInfo{
		Clock: m.Clock, HDisplay: m.HDisplay, HSyncStart: m.HSyncStart, HSyncEnd: m.HSyncEnd, HTotal: m.HTotal, HSkew: m.HSkew,
		VDisplay: m.VDisplay, VSyncStart: m.VSyncStart, VSyncEnd: m.VSyncEnd, VTotal: m.VTotal, VScan: m.VScan,
		VRefresh: m.VRefresh, Flags: m.Flags, Type: m.Type,
	}
	copy(u.Name[:uapi.DRMDisplayModeLen-1], m.Name)
	return u
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// MarshalBinary returns the mode as a MODE_ID property blob holds it: a
// struct drm_mode_modeinfo in host byte order (68 bytes). A Name longer
// than 31 bytes is cut. It never fails.
func (m Mode) MarshalBinary() ([]byte, error) {
	u := m.uapi()
	return u.Bytes(), nil
}

// UnmarshalBinary decodes a MODE_ID blob (68 bytes, host byte order).
func (m *Mode) UnmarshalBinary(b []byte) error {
	u, err := uapi.DRMModeModeInfoFromBytes(b)
	if err != nil {
		return fmt.Errorf("drm: %w", err)
	}
	*m = modeFromUAPI(u)
	return nil
}

// Preferred reports whether the driver marks the mode as the connector's
// preferred one (DRM_MODE_TYPE_PREFERRED).
func (m Mode) Preferred() bool { return m.Type&uapi.DRMModeTypePreferred != 0 }

// Refresh returns the refresh rate in Hz computed from the timings (clock
// / (htotal × vtotal), doubled for interlaced modes, halved for double
// scan, divided by vscan); 0 when the timings are incomplete.
func (m Mode) Refresh() float64 {
	if m.HTotal == 0 || m.VTotal == 0 {
		return 0
	}
	hz := float64(m.Clock) * 1000 / (float64(m.HTotal) * float64(m.VTotal))
	if m.Flags&uapi.DRMModeFlagInterlace != 0 {
		hz *= 2
	}
	if m.Flags&uapi.DRMModeFlagDblScan != 0 {
		hz /= 2
	}
	if m.VScan > 1 {
		hz /= float64(m.VScan)
	}
	return hz
}

// Size returns the mode's visible width and height in pixels.
func (m Mode) Size() (width, height uint32) { return uint32(m.HDisplay), uint32(m.VDisplay) }

// String returns "1024x768@60.00".
func (m Mode) String() string {
	return fmt.Sprintf("%dx%d@%.2f", m.HDisplay, m.VDisplay, m.Refresh())
}

// ConnectorType is a connector's kind (DRM_MODE_CONNECTOR_*).
type ConnectorType uint32

// Connector types heapd names; the kernel has more (String knows them).
const (
	ConnectorVirtual   ConnectorType = uapi.DRMModeConnectorVirtual
	ConnectorWriteback ConnectorType = uapi.DRMModeConnectorWriteback
)

// connectorTypeNames are the kernel's names (drm_connector_enum_list), by
// DRM_MODE_CONNECTOR_* value.
var connectorTypeNames = [...]string{
	"Unknown", "VGA", "DVI-I", "DVI-D", "DVI-A", "Composite", "SVIDEO", "LVDS",
	"Component", "DIN", "DP", "HDMI-A", "HDMI-B", "TV", "eDP", "Virtual", "DSI",
	"DPI", "Writeback", "SPI", "USB",
}

// String returns the kernel's name of the type ("Virtual", "HDMI-A",
// "Writeback"), which with the type ID makes a connector's name.
func (t ConnectorType) String() string {
	if int(t) < len(connectorTypeNames) {
		return connectorTypeNames[t]
	}
	return fmt.Sprintf("ConnectorType(%d)", uint32(t))
}

// MarshalText returns String().
func (t ConnectorType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// ConnectionStatus says whether a display is attached to a connector.
type ConnectionStatus uint32

// Connection statuses, with the kernel's values.
const (
	Connected         ConnectionStatus = uapi.DRMModeConnected
	Disconnected      ConnectionStatus = uapi.DRMModeDisconnected
	UnknownConnection ConnectionStatus = uapi.DRMModeUnknownConnection
)

// String returns "connected", "disconnected" or "unknown".
func (s ConnectionStatus) String() string {
	switch s {
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case UnknownConnection:
		return "unknown"
	}
	return fmt.Sprintf("ConnectionStatus(%d)", uint32(s))
}

// MarshalText returns String().
func (s ConnectionStatus) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ConnectorInfo is one KMS connector as GETCONNECTOR reports it (Connector
// is the sysfs view Discover gives).
type ConnectorInfo struct {
	ID     uint32           `json:"id"`
	Type   ConnectorType    `json:"type"`
	TypeID uint32           `json:"type_id"`
	Name   string           `json:"name"` // "Virtual-1", as the kernel names it
	Status ConnectionStatus `json:"status"`
	// MMWidth and MMHeight are the display's size in millimetres, 0 when
	// unknown.
	MMWidth  uint32 `json:"mm_width,omitempty"`
	MMHeight uint32 `json:"mm_height,omitempty"`
	// EncoderID is the encoder currently driving the connector, 0 if none.
	EncoderID uint32 `json:"encoder_id,omitempty"`
	// Encoders lists the encoders that can drive it.
	Encoders []uint32 `json:"encoders"`
	// Modes in the kernel's order: the preferred mode first, then by size
	// and refresh rate, descending. Writeback connectors have none.
	Modes []Mode `json:"modes"`
}

// PreferredMode returns the mode the driver prefers, or the first mode
// when none is marked; false when the connector has no modes. Safe on nil.
func (c *ConnectorInfo) PreferredMode() (Mode, bool) {
	if c == nil || len(c.Modes) == 0 {
		return Mode{}, false
	}
	for _, m := range c.Modes {
		if m.Preferred() {
			return m, true
		}
	}
	return c.Modes[0], true
}

// FindMode returns the connector's mode of exactly width × height: the
// preferred mode if it has that size, else the first such mode in the
// kernel's order (the highest refresh rate). False when there is none.
// Safe on nil.
func (c *ConnectorInfo) FindMode(width, height uint32) (Mode, bool) {
	if c == nil {
		return Mode{}, false
	}
	var found *Mode
	for i := range c.Modes {
		m := &c.Modes[i]
		if uint32(m.HDisplay) != width || uint32(m.VDisplay) != height {
			continue
		}
		if m.Preferred() {
			return *m, true
		}
		if found == nil {
			found = m
		}
	}
	if found == nil {
		return Mode{}, false
	}
	return *found, true
}

// Connectors returns every connector of the device with its modes. It
// probes each connector first (the kernel re-detects it and rebuilds its
// mode list) when the Device is DRM master; otherwise the kernel reports
// what it last probed, which on a display nobody has used yet can be no
// modes at all. Writeback connectors are listed only after
// EnableWriteback. ErrNeedPrimary on a render node, ErrNoKMS without mode
// setting. Safe for concurrent use.
func (d *Device) Connectors() ([]ConnectorInfo, error) {
	var out []ConnectorInfo
	err := d.kmsOp("Connectors", func(fd int) error {
		res, err := uapi.DRMModeGetResourcesIDs(fd)
		if err != nil {
			return d.kmsErr("Connectors", err)
		}
		for _, id := range res.Connectors {
			c, err := connectorLocked(fd, id)
			if errors.Is(err, unix.ENOENT) {
				continue // unplugged (an MST connector) since GETRESOURCES
			}
			if err != nil {
				return d.kmsErr(fmt.Sprintf("Connectors: connector %d", id), err)
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// Connector returns one connector, probed like Connectors. A connector
// that does not exist (or a writeback connector before EnableWriteback)
// gives ENOENT. Safe for concurrent use.
func (d *Device) Connector(id uint32) (ConnectorInfo, error) {
	var c ConnectorInfo
	err := d.kmsOp("Connector", func(fd int) error {
		var err error
		if c, err = connectorLocked(fd, id); err != nil {
			return d.kmsErr(fmt.Sprintf("Connector(%d)", id), err)
		}
		return nil
	})
	return c, err
}

func connectorLocked(fd int, id uint32) (ConnectorInfo, error) {
	info, err := uapi.DRMModeGetConnectorInfo(fd, id, true)
	if err != nil {
		return ConnectorInfo{}, err
	}
	c := ConnectorInfo{
		ID: id, Type: ConnectorType(info.ConnectorType), TypeID: info.ConnectorTypeID,
		Status: ConnectionStatus(info.Connection), MMWidth: info.MMWidth, MMHeight: info.MMHeight,
		EncoderID: info.EncoderID, Encoders: info.Encoders,
		Modes: make([]Mode, len(info.Modes)),
	}
	c.Name = fmt.Sprintf("%s-%d", c.Type, c.TypeID)
	for i, m := range info.Modes {
		c.Modes[i] = modeFromUAPI(m)
	}
	return c, nil
}

// Encoder is one KMS encoder (GETENCODER).
type Encoder struct {
	ID     uint32 `json:"id"`
	Type   uint32 `json:"type"`              // DRM_MODE_ENCODER_*
	CRTCID uint32 `json:"crtc_id,omitempty"` // the CRTC feeding it, 0 if none
	// PossibleCRTCs has bit i set when the i-th CRTC of Resources can
	// feed the encoder.
	PossibleCRTCs  uint32 `json:"possible_crtcs"`
	PossibleClones uint32 `json:"possible_clones"`
}

// Encoder returns one encoder. ENOENT when it does not exist. Safe for
// concurrent use.
func (d *Device) Encoder(id uint32) (Encoder, error) {
	var e Encoder
	err := d.kmsOp("Encoder", func(fd int) error {
		u, err := uapi.DRMModeGetEncoderCall(fd, id)
		if err != nil {
			return d.kmsErr(fmt.Sprintf("Encoder(%d)", id), err)
		}
		e = Encoder{ID: u.EncoderID, Type: u.EncoderType, CRTCID: u.CRTCID, PossibleCRTCs: u.PossibleCRTCs, PossibleClones: u.PossibleClones}
		return nil
	})
	return e, err
}

// CRTC is one CRTC's current state (GETCRTC).
type CRTC struct {
	ID        uint32 `json:"id"`
	FBID      uint32 `json:"fb_id,omitempty"` // the primary plane's framebuffer
	X         uint32 `json:"x"`
	Y         uint32 `json:"y"`
	GammaSize uint32 `json:"gamma_size"`
	// Mode is the current mode; nil when the CRTC has none (off).
	Mode *Mode `json:"mode,omitempty"`
}

// CRTC returns a CRTC's current state. ENOENT when it does not exist.
// Safe for concurrent use.
func (d *Device) CRTC(id uint32) (CRTC, error) {
	var c CRTC
	err := d.kmsOp("CRTC", func(fd int) error {
		u, err := uapi.DRMModeGetCRTCCall(fd, id)
		if err != nil {
			return d.kmsErr(fmt.Sprintf("CRTC(%d)", id), err)
		}
		c = CRTC{ID: u.CRTCID, FBID: u.FBID, X: u.X, Y: u.Y, GammaSize: u.GammaSize}
		if u.ModeValid != 0 {
			m := modeFromUAPI(u.Mode)
			c.Mode = &m
		}
		return nil
	})
	return c, err
}

// ObjectType is a KMS object's type (DRM_MODE_OBJECT_*).
type ObjectType uint32

// Object types with properties.
const (
	ObjectCRTC      ObjectType = uapi.DRMModeObjectCRTC
	ObjectConnector ObjectType = uapi.DRMModeObjectConnector
	ObjectPlane     ObjectType = uapi.DRMModeObjectPlane
)

// String returns "crtc", "connector" or "plane".
func (t ObjectType) String() string {
	switch t {
	case ObjectCRTC:
		return "crtc"
	case ObjectConnector:
		return "connector"
	case ObjectPlane:
		return "plane"
	}
	return fmt.Sprintf("ObjectType(%#x)", uint32(t))
}

// Property is one property of a KMS object and its value when read.
type Property struct {
	ID    uint32 `json:"id"`
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// Properties are a KMS object's properties by name, as read at one moment.
// The value is immutable: safe for concurrent use.
type Properties struct {
	Object uint32
	Type   ObjectType
	List   []Property // in the kernel's order
}

// Lookup returns the property called name; false if the object has none.
// Safe on nil.
func (p *Properties) Lookup(name string) (Property, bool) {
	if p == nil {
		return Property{}, false
	}
	for _, q := range p.List {
		if q.Name == name {
			return q, true
		}
	}
	return Property{}, false
}

// ID returns the ID of the property called name, 0 if there is none.
func (p *Properties) ID(name string) uint32 {
	q, _ := p.Lookup(name)
	return q.ID
}

// Value returns the value of the property called name when read; false if
// there is none.
func (p *Properties) Value(name string) (uint64, bool) {
	q, ok := p.Lookup(name)
	return q.Value, ok
}

// Properties reads the properties of object id of type typ with their
// current values. Atomic-only properties ("FB_ID", "CRTC_ID", "MODE_ID",
// "ACTIVE", the writeback ones) are listed only after EnableAtomic.
// ENOENT when the object does not exist. Safe for concurrent use.
func (d *Device) Properties(id uint32, typ ObjectType) (*Properties, error) {
	var out *Properties
	err := d.kmsOp("Properties", func(fd int) error {
		ids, values, err := uapi.DRMModeObjGetPropertyList(fd, id, uint32(typ))
		if err != nil {
			return d.kmsErr(fmt.Sprintf("Properties(%v %d)", typ, id), err)
		}
		out = &Properties{Object: id, Type: typ, List: make([]Property, len(ids))}
		for i, pid := range ids {
			name, err := d.propNameLocked(fd, pid)
			if err != nil {
				return d.kmsErr(fmt.Sprintf("Properties(%v %d)", typ, id), err)
			}
			out.List[i] = Property{ID: pid, Name: name, Value: values[i]}
		}
		return nil
	})
	return out, err
}

// PropertyBlobData returns a copy of the content of property blob id
// (GETPROPBLOB): a MODE_ID blob decodes with Mode.UnmarshalBinary. ENOENT
// when the blob does not exist. Safe for concurrent use.
func (d *Device) PropertyBlobData(id uint32) ([]byte, error) {
	var data []byte
	err := d.kmsOp("PropertyBlobData", func(fd int) error {
		var err error
		if data, err = uapi.DRMModeGetPropBlobData(fd, id); err != nil {
			return d.kmsErr(fmt.Sprintf("PropertyBlobData(%d)", id), err)
		}
		return nil
	})
	return data, err
}

// PropertyBlob is a property blob this Device created (CREATEPROPBLOB), for
// a blob property such as a CRTC's MODE_ID. Objects whose committed state
// uses it keep the kernel's copy alive after Close.
//
// Close destroys it (DESTROYPROPBLOB); Close is idempotent, nil-safe and
// safe for concurrent use, and a no-op once the Device is closed (the
// kernel destroyed it with the fd). A PropertyBlob dropped without Close is
// destroyed by a cleanup and the leak is counted (tests fail on it).
type PropertyBlob struct {
	dev     *Device
	id      uint32
	closed  *atomic.Bool
	cleanup runtime.Cleanup
}

// CreatePropertyBlob creates a property blob holding a copy of data, which
// must not be empty. The caller must Close it. Safe for concurrent use.
func (d *Device) CreatePropertyBlob(data []byte) (*PropertyBlob, error) {
	if d == nil {
		return nil, ErrClosed
	}
	var b *PropertyBlob
	err := d.kmsOp("CreatePropertyBlob", func(fd int) error {
		id, err := uapi.DRMModeCreatePropBlobCall(fd, data)
		if err != nil {
			return d.kmsErr(fmt.Sprintf("CreatePropertyBlob(%d bytes)", len(data)), err)
		}
		b = &PropertyBlob{dev: d, id: id, closed: new(atomic.Bool)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	type arg struct {
		dev    *Device
		id     uint32
		closed *atomic.Bool
	}
	b.cleanup = runtime.AddCleanup(b, func(a arg) {
		if a.closed.CompareAndSwap(false, true) {
			leak.Collected("drm property blob")
			_ = a.dev.destroyBlob(a.id)
		}
	}, arg{d, b.id, b.closed})
	return b, nil
}

// CreateModeBlob creates a property blob holding mode m, the value of a
// CRTC's MODE_ID property. The caller must Close it.
func (d *Device) CreateModeBlob(m Mode) (*PropertyBlob, error) {
	data, _ := m.MarshalBinary()
	return d.CreatePropertyBlob(data)
}

// ID returns the blob's ID, the value for a blob property; 0 on nil.
func (b *PropertyBlob) ID() uint32 {
	if b == nil {
		return 0
	}
	return b.id
}

// Close destroys the blob (DESTROYPROPBLOB). Idempotent and nil-safe.
func (b *PropertyBlob) Close() error {
	if b == nil || !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cleanup.Stop()
	return b.dev.destroyBlob(b.id)
}

// destroyBlob destroys blob id unless the Device is closed.
func (d *Device) destroyBlob(id uint32) error {
	err := d.locked(func(fd int) error { return uapi.DRMModeDestroyPropBlobCall(fd, id) })
	if errors.Is(err, ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drm: DestroyPropertyBlob %d on %s: %w", id, d, err)
	}
	return nil
}

// OpenHandles returns the number of distinct GEM handles the Device holds
// open through Import, CreateDumb and their Handles: 0 once every Handle
// and dumb buffer is closed. For leak checks; 0 on nil. Safe for
// concurrent use.
func (d *Device) OpenHandles() int {
	if d == nil {
		return 0
	}
	return d.handleCount()
}
