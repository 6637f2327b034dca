package drm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/uapi"
)

// Resources are a KMS device's mode-setting objects (GETRESOURCES) and its
// framebuffer size limits.
type Resources struct {
	FBs        []uint32 `json:"fbs"`
	CRTCs      []uint32 `json:"crtcs"`
	Connectors []uint32 `json:"connectors"`
	Encoders   []uint32 `json:"encoders"`
	MinWidth   uint32   `json:"min_width"`
	MaxWidth   uint32   `json:"max_width"`
	MinHeight  uint32   `json:"min_height"`
	MaxHeight  uint32   `json:"max_height"`
}

// Resources returns the device's KMS resources. ErrNeedPrimary on a render
// node, ErrNoKMS on a device without mode setting. Safe for concurrent use.
func (d *Device) Resources() (*Resources, error) {
	var r *Resources
	err := d.kmsOp("Resources", func(fd int) error {
		res, err := uapi.DRMModeGetResourcesIDs(fd)
		if err != nil {
			return d.kmsErr("Resources", err)
		}
		r = &Resources{
			FBs: res.FBs, CRTCs: res.CRTCs, Connectors: res.Connectors, Encoders: res.Encoders,
			MinWidth: res.MinWidth, MaxWidth: res.MaxWidth, MinHeight: res.MinHeight, MaxHeight: res.MaxHeight,
		}
		return nil
	})
	return r, err
}

// PlaneType is a plane's role (DRM_PLANE_TYPE_*).
type PlaneType int

// Plane types, with the kernel's values.
const (
	PlaneOverlay PlaneType = uapi.DRMPlaneTypeOverlay
	PlanePrimary PlaneType = uapi.DRMPlaneTypePrimary
	PlaneCursor  PlaneType = uapi.DRMPlaneTypeCursor
)

// String returns "overlay", "primary" or "cursor".
func (t PlaneType) String() string {
	switch t {
	case PlaneOverlay:
		return "overlay"
	case PlanePrimary:
		return "primary"
	case PlaneCursor:
		return "cursor"
	}
	return fmt.Sprintf("PlaneType(%d)", int(t))
}

// MarshalText returns String().
func (t PlaneType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses what MarshalText writes ("overlay", "primary",
// "cursor").
func (t *PlaneType) UnmarshalText(b []byte) error {
	for _, v := range []PlaneType{PlaneOverlay, PlanePrimary, PlaneCursor} {
		if v.String() == string(b) {
			*t = v
			return nil
		}
	}
	return fmt.Errorf("drm: unknown plane type %q", b)
}

// Plane is one KMS plane with the formats it scans out.
type Plane struct {
	ID            uint32    `json:"id"`
	Type          PlaneType `json:"type"`
	PossibleCRTCs uint32    `json:"possible_crtcs"` // bit i: the i-th CRTC of Resources
	CRTCID        uint32    `json:"crtc_id,omitempty"`
	FBID          uint32    `json:"fb_id,omitempty"`
	// Formats is the plane's format list (GETPLANE).
	Formats []Format `json:"formats"`
	// Modifiers is the plane's IN_FORMATS property: format → modifiers.
	// Nil when the plane has none (a driver without modifier support,
	// whose planes take their formats with the implicit, linear layout).
	Modifiers FormatModifiers `json:"modifiers,omitempty"`
}

// Supports reports whether the plane scans out format f with modifier m.
// Without IN_FORMATS, a listed format counts as supported LINEAR (and with
// ModInvalid, the implicit layout). Safe on a nil Plane (false).
func (p *Plane) Supports(f Format, m Modifier) bool {
	if p == nil {
		return false
	}
	if p.Modifiers != nil {
		return p.Modifiers.Supports(f, m)
	}
	if m != ModLinear && m != ModInvalid {
		return false
	}
	for _, g := range p.Formats {
		if g == f {
			return true
		}
	}
	return false
}

// Planes returns every plane of the device, primary and cursor planes
// included (it enables the UNIVERSAL_PLANES client capability on the
// Device's fd), each with its type and IN_FORMATS. ErrNeedPrimary on a
// render node, ErrNoKMS on a device without mode setting. Safe for
// concurrent use.
func (d *Device) Planes() ([]Plane, error) {
	var planes []Plane
	err := d.kmsOp("Planes", func(fd int) error {
		if !d.universal {
			if err := uapi.DRMSetClientCapCall(fd, uapi.DRMClientCapUniversalPlanes, 1); err != nil {
				return d.kmsErr("Planes", err)
			}
			d.universal = true
		}
		ids, err := uapi.DRMModeGetPlaneIDs(fd)
		if err != nil {
			return d.kmsErr("Planes", err)
		}
		for _, id := range ids {
			p, err := d.planeLocked(fd, id)
			if err != nil {
				return fmt.Errorf("drm: plane %d of %s: %w", id, d, err)
			}
			planes = append(planes, p)
		}
		return nil
	})
	return planes, err
}

// planeLocked reads one plane; d.mu must be held.
func (d *Device) planeLocked(fd int, id uint32) (Plane, error) {
	info, formats, err := uapi.DRMModeGetPlaneInfo(fd, id)
	if err != nil {
		return Plane{}, err
	}
	p := Plane{
		ID: id, PossibleCRTCs: info.PossibleCRTCs, CRTCID: info.CRTCID, FBID: info.FBID,
		Formats: make([]Format, len(formats)),
	}
	for i, f := range formats {
		p.Formats[i] = Format(f)
	}
	props, values, err := uapi.DRMModeObjGetPropertyList(fd, id, uapi.DRMModeObjectPlane)
	if err != nil {
		return Plane{}, err
	}
	for i, pid := range props {
		name, err := d.propNameLocked(fd, pid)
		if err != nil {
			return Plane{}, err
		}
		switch name {
		case "type":
			p.Type = PlaneType(values[i])
		case "IN_FORMATS":
			if values[i] == 0 || values[i] > 1<<32-1 {
				continue
			}
			blob, err := uapi.DRMModeGetPropBlobData(fd, uint32(values[i]))
			if err != nil {
				return Plane{}, fmt.Errorf("IN_FORMATS blob %d: %w", values[i], err)
			}
			if p.Modifiers, err = ParseInFormats(blob); err != nil {
				return Plane{}, fmt.Errorf("IN_FORMATS blob %d: %w", values[i], err)
			}
		}
	}
	return p, nil
}

// propNameLocked returns the name of property id, cached per Device; d.mu
// must be held.
func (d *Device) propNameLocked(fd int, id uint32) (string, error) {
	if name, ok := d.propNames[id]; ok {
		return name, nil
	}
	info, err := uapi.DRMModeGetPropertyInfo(fd, id)
	if err != nil {
		return "", fmt.Errorf("property %d: %w", id, err)
	}
	if d.propNames == nil {
		d.propNames = map[uint32]string{}
	}
	d.propNames[id] = info.Name
	return info.Name, nil
}

// kmsErr wraps a KMS ioctl error, adding ErrNoKMS when the kernel says the
// driver has no mode setting.
func (d *Device) kmsErr(op string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("drm: %s on %s: %w (%w)", op, d, ErrNoKMS, err)
	}
	return fmt.Errorf("drm: %s on %s: %w", op, d, err)
}
