package uapi

import (
	"os"
	"runtime"
	"structs"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Typed wrappers for the DRM ioctls whose arguments carry user pointers to
// arrays the kernel fills (versions, ID lists, property values, blobs). The
// kernel reports how many elements exist and copies only when the caller's
// array is large enough (a blob only when exactly large enough), so each
// wrapper asks for the counts, allocates, asks again and retries while a
// count grew in between (connectors can appear between two calls).
//
// Arrays behind u64 pointer fields are pinned with a runtime.Pinner for the
// duration of the call: pinning makes them heap objects (the compiler may
// otherwise place a small slice on a goroutine stack, which can move) and
// keeps them alive although the kernel struct holds only their address.

// maxCountRetries bounds the count/allocate/fill loops: a device whose
// object count changes on every call is not worth waiting for.
const maxCountRetries = 8

// userPtr returns the address of s's first element for a u64 pointer field,
// pinning s's backing array until p is unpinned; 0 for an empty slice.
func userPtr[T any](p *runtime.Pinner, s []T) uint64 {
	if len(s) == 0 {
		return 0
	}
	p.Pin(&s[0])
	return uint64(uintptr(unsafe.Pointer(&s[0])))
}

// DRMModePropertyEnum is struct drm_mode_property_enum.
type DRMModePropertyEnum struct {
	_     structs.HostLayout
	Value uint64
	Name  [DRMPropNameLen]byte
}

// DRM_MODE_PROP_* flags of DRMModeGetProperty.Flags.
const (
	DRMModePropPending   = 1 << 0
	DRMModePropRange     = 1 << 1
	DRMModePropImmutable = 1 << 2
	DRMModePropEnum      = 1 << 3
	DRMModePropBlob      = 1 << 4
	DRMModePropBitmask   = 1 << 5
)

// DRM_PLANE_TYPE_* values of a plane's "type" property.
const (
	DRMPlaneTypeOverlay = 0
	DRMPlaneTypePrimary = 1
	DRMPlaneTypeCursor  = 2
)

// DRMIoctlDropMaster is DRM_IOCTL_DROP_MASTER (_IO('d', 0x1f)).
var DRMIoctlDropMaster = io('d', 0x1f)

// DRMDropMasterCall issues DRM_IOCTL_DROP_MASTER on a primary node. The
// kernel makes the first opener of a primary node its DRM master when no
// master exists; dropping it lets a compositor take the display. EINVAL
// means fd was not master.
func DRMDropMasterCall(fd int) error {
	_, err := ioctl(fd, DRMIoctlDropMaster, nil, "DRM_IOCTL_DROP_MASTER")
	return err
}

// DRMVersionInfo is the decoded answer of DRM_IOCTL_VERSION.
type DRMVersionInfo struct {
	Major, Minor, Patch int32
	Name, Date, Desc    string
}

// DRMVersionQuery issues DRM_IOCTL_VERSION twice (lengths, then strings) and
// returns the driver's version and names. A non-DRM fd gives ENOTTY.
func DRMVersionQuery(fd int) (DRMVersionInfo, error) {
	var v DRMVersion
	if err := DRMVersionCall(fd, &v); err != nil {
		return DRMVersionInfo{}, err
	}
	for range maxCountRetries {
		name := make([]byte, v.NameLen)
		date := make([]byte, v.DateLen)
		desc := make([]byte, v.DescLen)
		var p runtime.Pinner
		a := DRMVersion{
			NameLen: uintptr(len(name)), Name: uintptr(userPtr(&p, name)),
			DateLen: uintptr(len(date)), Date: uintptr(userPtr(&p, date)),
			DescLen: uintptr(len(desc)), Desc: uintptr(userPtr(&p, desc)),
		}
		err := DRMVersionCall(fd, &a)
		p.Unpin()
		if err != nil {
			return DRMVersionInfo{}, err
		}
		if a.NameLen <= uintptr(len(name)) && a.DateLen <= uintptr(len(date)) && a.DescLen <= uintptr(len(desc)) {
			return DRMVersionInfo{
				Major: a.Major, Minor: a.Minor, Patch: a.Patch,
				Name: cString(name[:a.NameLen]),
				Date: cString(date[:a.DateLen]),
				Desc: cString(desc[:a.DescLen]),
			}, nil
		}
		v = a
	}
	return DRMVersionInfo{}, errCountsUnstable("DRM_IOCTL_VERSION")
}

// DRMCardResources is the decoded answer of DRM_IOCTL_MODE_GETRESOURCES.
type DRMCardResources struct {
	FBs, CRTCs, Connectors, Encoders []uint32
	MinWidth, MaxWidth               uint32
	MinHeight, MaxHeight             uint32
}

// DRMModeGetResourcesIDs issues DRM_IOCTL_MODE_GETRESOURCES until the ID
// lists are complete. A driver without mode setting gives EOPNOTSUPP; a
// render node gives EACCES.
func DRMModeGetResourcesIDs(fd int) (DRMCardResources, error) {
	var r DRMModeCardRes
	if err := DRMModeGetResourcesCall(fd, &r); err != nil {
		return DRMCardResources{}, err
	}
	for range maxCountRetries {
		out := DRMCardResources{
			FBs:        make([]uint32, r.CountFBs),
			CRTCs:      make([]uint32, r.CountCRTCs),
			Connectors: make([]uint32, r.CountConnectors),
			Encoders:   make([]uint32, r.CountEncoders),
		}
		var p runtime.Pinner
		a := DRMModeCardRes{
			FBIDPtr: userPtr(&p, out.FBs), CountFBs: r.CountFBs,
			CRTCIDPtr: userPtr(&p, out.CRTCs), CountCRTCs: r.CountCRTCs,
			ConnectorIDPtr: userPtr(&p, out.Connectors), CountConnectors: r.CountConnectors,
			EncoderIDPtr: userPtr(&p, out.Encoders), CountEncoders: r.CountEncoders,
		}
		err := DRMModeGetResourcesCall(fd, &a)
		p.Unpin()
		if err != nil {
			return DRMCardResources{}, err
		}
		if a.CountFBs <= r.CountFBs && a.CountCRTCs <= r.CountCRTCs &&
			a.CountConnectors <= r.CountConnectors && a.CountEncoders <= r.CountEncoders {
			out.FBs = out.FBs[:a.CountFBs]
			out.CRTCs = out.CRTCs[:a.CountCRTCs]
			out.Connectors = out.Connectors[:a.CountConnectors]
			out.Encoders = out.Encoders[:a.CountEncoders]
			out.MinWidth, out.MaxWidth = a.MinWidth, a.MaxWidth
			out.MinHeight, out.MaxHeight = a.MinHeight, a.MaxHeight
			return out, nil
		}
		r = a
	}
	return DRMCardResources{}, errCountsUnstable("DRM_IOCTL_MODE_GETRESOURCES")
}

// DRMModeGetPlaneIDs issues DRM_IOCTL_MODE_GETPLANERESOURCES until the plane
// list is complete. Primary and cursor planes are listed only after
// SET_CLIENT_CAP(UNIVERSAL_PLANES).
func DRMModeGetPlaneIDs(fd int) ([]uint32, error) {
	var r DRMModeGetPlaneRes
	if err := DRMModeGetPlaneResCall(fd, &r); err != nil {
		return nil, err
	}
	for range maxCountRetries {
		ids := make([]uint32, r.CountPlanes)
		var p runtime.Pinner
		a := DRMModeGetPlaneRes{PlaneIDPtr: userPtr(&p, ids), CountPlanes: r.CountPlanes}
		err := DRMModeGetPlaneResCall(fd, &a)
		p.Unpin()
		if err != nil {
			return nil, err
		}
		if a.CountPlanes <= r.CountPlanes {
			return ids[:a.CountPlanes], nil
		}
		r = a
	}
	return nil, errCountsUnstable("DRM_IOCTL_MODE_GETPLANERESOURCES")
}

// DRMModeGetPlaneInfo issues DRM_IOCTL_MODE_GETPLANE for planeID and returns
// the answer (its FormatTypePtr cleared) and the plane's format list.
func DRMModeGetPlaneInfo(fd int, planeID uint32) (DRMModeGetPlane, []uint32, error) {
	r := DRMModeGetPlane{PlaneID: planeID}
	if err := DRMModeGetPlaneCall(fd, &r); err != nil {
		return DRMModeGetPlane{}, nil, err
	}
	for range maxCountRetries {
		formats := make([]uint32, r.CountFormatTypes)
		var p runtime.Pinner
		a := DRMModeGetPlane{PlaneID: planeID, CountFormatTypes: r.CountFormatTypes, FormatTypePtr: userPtr(&p, formats)}
		err := DRMModeGetPlaneCall(fd, &a)
		p.Unpin()
		if err != nil {
			return DRMModeGetPlane{}, nil, err
		}
		if a.CountFormatTypes <= r.CountFormatTypes {
			a.FormatTypePtr = 0
			return a, formats[:a.CountFormatTypes], nil
		}
		r = a
	}
	return DRMModeGetPlane{}, nil, errCountsUnstable("DRM_IOCTL_MODE_GETPLANE")
}

// DRMModeObjGetPropertyList issues DRM_IOCTL_MODE_OBJ_GETPROPERTIES for the
// object and returns its property IDs and their current values.
func DRMModeObjGetPropertyList(fd int, objID, objType uint32) (ids []uint32, values []uint64, err error) {
	r := DRMModeObjGetProperties{ObjID: objID, ObjType: objType}
	if err := DRMModeObjGetPropertiesCall(fd, &r); err != nil {
		return nil, nil, err
	}
	for range maxCountRetries {
		ids = make([]uint32, r.CountProps)
		values = make([]uint64, r.CountProps)
		var p runtime.Pinner
		a := DRMModeObjGetProperties{
			PropsPtr: userPtr(&p, ids), PropValuesPtr: userPtr(&p, values),
			CountProps: r.CountProps, ObjID: objID, ObjType: objType,
		}
		err := DRMModeObjGetPropertiesCall(fd, &a)
		p.Unpin()
		if err != nil {
			return nil, nil, err
		}
		if a.CountProps <= r.CountProps {
			return ids[:a.CountProps], values[:a.CountProps], nil
		}
		r = a
	}
	return nil, nil, errCountsUnstable("DRM_IOCTL_MODE_OBJ_GETPROPERTIES")
}

// DRMPropertyEnum is one named value of an enum or bitmask property.
type DRMPropertyEnum struct {
	Value uint64
	Name  string
}

// DRMPropertyInfo is the decoded answer of DRM_IOCTL_MODE_GETPROPERTY.
type DRMPropertyInfo struct {
	ID     uint32
	Name   string
	Flags  uint32   // DRMModeProp* bits (and the extended type bits)
	Values []uint64 // range bounds, or the enum values
	Enums  []DRMPropertyEnum
}

// DRMModeGetPropertyInfo issues DRM_IOCTL_MODE_GETPROPERTY for propID and
// returns its name, flags, values and enum names.
func DRMModeGetPropertyInfo(fd int, propID uint32) (DRMPropertyInfo, error) {
	r := DRMModeGetProperty{PropID: propID}
	if err := DRMModeGetPropertyCall(fd, &r); err != nil {
		return DRMPropertyInfo{}, err
	}
	for range maxCountRetries {
		values := make([]uint64, r.CountValues)
		enums := make([]DRMModePropertyEnum, r.CountEnumBlobs)
		var p runtime.Pinner
		a := DRMModeGetProperty{
			ValuesPtr: userPtr(&p, values), CountValues: r.CountValues,
			EnumBlobPtr: userPtr(&p, enums), CountEnumBlobs: r.CountEnumBlobs,
			PropID: propID,
		}
		err := DRMModeGetPropertyCall(fd, &a)
		p.Unpin()
		if err != nil {
			return DRMPropertyInfo{}, err
		}
		if a.CountValues <= r.CountValues && a.CountEnumBlobs <= r.CountEnumBlobs {
			info := DRMPropertyInfo{ID: propID, Name: cString(a.Name[:]), Flags: a.Flags, Values: values[:a.CountValues]}
			for _, e := range enums[:a.CountEnumBlobs] {
				info.Enums = append(info.Enums, DRMPropertyEnum{Value: e.Value, Name: cString(e.Name[:])})
			}
			return info, nil
		}
		r = a
	}
	return DRMPropertyInfo{}, errCountsUnstable("DRM_IOCTL_MODE_GETPROPERTY")
}

// DRMModeGetPropBlobData issues DRM_IOCTL_MODE_GETPROPBLOB for blobID and
// returns a copy of the blob's bytes. The kernel copies only into a buffer
// of exactly the blob's length, which the first call reports. A blob that no
// longer exists gives ENOENT.
func DRMModeGetPropBlobData(fd int, blobID uint32) ([]byte, error) {
	r := DRMModeGetBlob{BlobID: blobID}
	if err := DRMModeGetPropBlobCall(fd, &r); err != nil {
		return nil, err
	}
	for range maxCountRetries {
		data := make([]byte, r.Length)
		var p runtime.Pinner
		a := DRMModeGetBlob{BlobID: blobID, Length: r.Length, Data: userPtr(&p, data)}
		err := DRMModeGetPropBlobCall(fd, &a)
		p.Unpin()
		if err != nil {
			return nil, err
		}
		if a.Length == r.Length {
			return data, nil
		}
		r = a // blobs are immutable; only a reused ID can change length
	}
	return nil, errCountsUnstable("DRM_IOCTL_MODE_GETPROPBLOB")
}

// errCountsUnstable reports that object counts kept changing between calls.
func errCountsUnstable(name string) error {
	return os.NewSyscallError("ioctl "+name+" (counts kept changing)", unix.EAGAIN)
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
