package uapi

import (
	"structs"
	"unsafe"
)

// DRM core and KMS (drm/drm.h, drm/drm_mode.h).

// DRMVersion is struct drm_version. Name, Date and Desc point at caller
// buffers of the given lengths (size_t and char * are pointer-sized, so this
// is 64 bytes on 64-bit and 36 bytes on 32-bit).
type DRMVersion struct {
	_       structs.HostLayout
	Major   int32
	Minor   int32
	Patch   int32
	NameLen uintptr
	Name    uintptr
	DateLen uintptr
	Date    uintptr
	DescLen uintptr
	Desc    uintptr
}

// DRMGemClose is struct drm_gem_close.
type DRMGemClose struct {
	_      structs.HostLayout
	Handle uint32
	Pad    uint32
}

// DRMGetCap is struct drm_get_cap; struct drm_set_client_cap has the same
// layout.
type DRMGetCap struct {
	_     structs.HostLayout
	Cap   uint64
	Value uint64
}

// DRMSetClientCap is struct drm_set_client_cap.
type DRMSetClientCap = DRMGetCap

// DRM capabilities (DRM_CAP_*) and client capabilities (DRM_CLIENT_CAP_*).
const (
	DRMCapDumbBuffer                = 0x1
	DRMCapPrime                     = 0x5
	DRMCapAddFB2Modifiers           = 0x10
	DRMPrimeCapImport               = 0x1
	DRMPrimeCapExport               = 0x2
	DRMClientCapUniversalPlanes     = 2
	DRMClientCapAtomic              = 3
	DRMClientCapWritebackConnectors = 5
)

// DRMPrimeHandle is struct drm_prime_handle.
type DRMPrimeHandle struct {
	_      structs.HostLayout
	Handle uint32
	Flags  uint32
	FD     int32
}

// DRMModeCardRes is struct drm_mode_card_res.
type DRMModeCardRes struct {
	_               structs.HostLayout
	FBIDPtr         uint64
	CRTCIDPtr       uint64
	ConnectorIDPtr  uint64
	EncoderIDPtr    uint64
	CountFBs        uint32
	CountCRTCs      uint32
	CountConnectors uint32
	CountEncoders   uint32
	MinWidth        uint32
	MaxWidth        uint32
	MinHeight       uint32
	MaxHeight       uint32
}

// DRMPropNameLen is DRM_PROP_NAME_LEN.
const DRMPropNameLen = 32

// DRMModeGetProperty is struct drm_mode_get_property.
type DRMModeGetProperty struct {
	_              structs.HostLayout
	ValuesPtr      uint64
	EnumBlobPtr    uint64
	PropID         uint32
	Flags          uint32
	Name           [DRMPropNameLen]byte
	CountValues    uint32
	CountEnumBlobs uint32
}

// DRMModeGetBlob is struct drm_mode_get_blob.
type DRMModeGetBlob struct {
	_      structs.HostLayout
	BlobID uint32
	Length uint32
	Data   uint64
}

// DRMModeCreateDumb is struct drm_mode_create_dumb.
type DRMModeCreateDumb struct {
	_      structs.HostLayout
	Height uint32
	Width  uint32
	BPP    uint32
	Flags  uint32
	Handle uint32 // out
	Pitch  uint32 // out
	Size   uint64 // out
}

// DRMModeMapDumb is struct drm_mode_map_dumb.
type DRMModeMapDumb struct {
	_      structs.HostLayout
	Handle uint32
	Pad    uint32
	Offset uint64 // out
}

// DRMModeDestroyDumb is struct drm_mode_destroy_dumb.
type DRMModeDestroyDumb struct {
	_      structs.HostLayout
	Handle uint32
}

// DRMModeGetPlaneRes is struct drm_mode_get_plane_res.
type DRMModeGetPlaneRes struct {
	_           structs.HostLayout
	PlaneIDPtr  uint64
	CountPlanes uint32
	_           [u64Pad]byte // the C struct's tail padding on 32-bit arm
}

// DRMModeGetPlane is struct drm_mode_get_plane.
type DRMModeGetPlane struct {
	_                structs.HostLayout
	PlaneID          uint32
	CRTCID           uint32
	FBID             uint32
	PossibleCRTCs    uint32
	GammaSize        uint32
	CountFormatTypes uint32
	FormatTypePtr    uint64
}

// DRMModeFBCmd2 is struct drm_mode_fb_cmd2 (104 bytes; 100 on i386, where
// u64 is 4-byte aligned).
type DRMModeFBCmd2 struct {
	_           structs.HostLayout
	FBID        uint32 // out
	Width       uint32
	Height      uint32
	PixelFormat uint32
	Flags       uint32
	Handles     [4]uint32
	Pitches     [4]uint32
	Offsets     [4]uint32
	_           [u64Pad]byte // 32-bit arm aligns __u64 to 8 (see u64Pad)
	Modifier    [4]uint64
}

// DRMModeFBModifiers is DRM_MODE_FB_MODIFIERS for DRMModeFBCmd2.Flags.
const DRMModeFBModifiers = 1 << 1

// DRMModeObjGetProperties is struct drm_mode_obj_get_properties.
type DRMModeObjGetProperties struct {
	_             structs.HostLayout
	PropsPtr      uint64
	PropValuesPtr uint64
	CountProps    uint32
	ObjID         uint32
	ObjType       uint32
	_             [u64Pad]byte // the C struct's tail padding on 32-bit arm
}

// DRM_MODE_OBJECT_* types.
const (
	DRMModeObjectCRTC      = 0xcccccccc
	DRMModeObjectConnector = 0xc0c0c0c0
	DRMModeObjectEncoder   = 0xe0e0e0e0
	DRMModeObjectPlane     = 0xeeeeeeee
	DRMModeObjectFB        = 0xfbfbfbfb
	DRMModeObjectBlob      = 0xbbbbbbbb
)

// Request numbers ('d' is DRM_IOCTL_BASE; KMS requests start at 0xA0).
var (
	DRMIoctlVersion              = iowr('d', 0x00, sizeof[DRMVersion]())
	DRMIoctlGemClose             = iow('d', 0x09, sizeof[DRMGemClose]())
	DRMIoctlGetCap               = iowr('d', 0x0c, sizeof[DRMGetCap]())
	DRMIoctlSetClientCap         = iow('d', 0x0d, sizeof[DRMSetClientCap]())
	DRMIoctlPrimeHandleToFD      = iowr('d', 0x2d, sizeof[DRMPrimeHandle]())
	DRMIoctlPrimeFDToHandle      = iowr('d', 0x2e, sizeof[DRMPrimeHandle]())
	DRMIoctlModeGetResources     = iowr('d', 0xa0, sizeof[DRMModeCardRes]())
	DRMIoctlModeGetProperty      = iowr('d', 0xaa, sizeof[DRMModeGetProperty]())
	DRMIoctlModeGetPropBlob      = iowr('d', 0xac, sizeof[DRMModeGetBlob]())
	DRMIoctlModeRmFB             = iowr('d', 0xaf, sizeof[uint32]())
	DRMIoctlModeCreateDumb       = iowr('d', 0xb2, sizeof[DRMModeCreateDumb]())
	DRMIoctlModeMapDumb          = iowr('d', 0xb3, sizeof[DRMModeMapDumb]())
	DRMIoctlModeDestroyDumb      = iowr('d', 0xb4, sizeof[DRMModeDestroyDumb]())
	DRMIoctlModeGetPlaneRes      = iowr('d', 0xb5, sizeof[DRMModeGetPlaneRes]())
	DRMIoctlModeGetPlane         = iowr('d', 0xb6, sizeof[DRMModeGetPlane]())
	DRMIoctlModeAddFB2           = iowr('d', 0xb8, sizeof[DRMModeFBCmd2]())
	DRMIoctlModeObjGetProperties = iowr('d', 0xb9, sizeof[DRMModeObjGetProperties]())
)

// DRMVersionCall issues DRM_IOCTL_VERSION. Pointer fields of v must point at
// Go memory the caller keeps alive across the call.
func DRMVersionCall(fd int, v *DRMVersion) error {
	_, err := ioctl(fd, DRMIoctlVersion, unsafe.Pointer(v), "DRM_IOCTL_VERSION")
	return err
}

// DRMGemCloseCall issues DRM_IOCTL_GEM_CLOSE for handle.
func DRMGemCloseCall(fd int, handle uint32) error {
	a := DRMGemClose{Handle: handle}
	_, err := ioctl(fd, DRMIoctlGemClose, unsafe.Pointer(&a), "DRM_IOCTL_GEM_CLOSE")
	return err
}

// DRMGetCapCall issues DRM_IOCTL_GET_CAP and returns the value.
func DRMGetCapCall(fd int, capability uint64) (uint64, error) {
	a := DRMGetCap{Cap: capability}
	if _, err := ioctl(fd, DRMIoctlGetCap, unsafe.Pointer(&a), "DRM_IOCTL_GET_CAP"); err != nil {
		return 0, err
	}
	return a.Value, nil
}

// DRMSetClientCapCall issues DRM_IOCTL_SET_CLIENT_CAP.
func DRMSetClientCapCall(fd int, capability, value uint64) error {
	a := DRMSetClientCap{Cap: capability, Value: value}
	_, err := ioctl(fd, DRMIoctlSetClientCap, unsafe.Pointer(&a), "DRM_IOCTL_SET_CLIENT_CAP")
	return err
}

// DRMPrimeHandleToFDCall exports handle as a new DMA-BUF fd owned by the
// caller.
func DRMPrimeHandleToFDCall(fd int, handle, flags uint32) (int, error) {
	a := DRMPrimeHandle{Handle: handle, Flags: flags, FD: -1}
	if _, err := ioctl(fd, DRMIoctlPrimeHandleToFD, unsafe.Pointer(&a), "DRM_IOCTL_PRIME_HANDLE_TO_FD"); err != nil {
		return -1, err
	}
	return int(a.FD), nil
}

// DRMPrimeFDToHandleCall imports bufFD (which the caller keeps) and returns
// the GEM handle. Importing an object already imported on fd returns the
// same handle.
func DRMPrimeFDToHandleCall(fd, bufFD int) (uint32, error) {
	a := DRMPrimeHandle{FD: int32(bufFD)}
	if _, err := ioctl(fd, DRMIoctlPrimeFDToHandle, unsafe.Pointer(&a), "DRM_IOCTL_PRIME_FD_TO_HANDLE"); err != nil {
		return 0, err
	}
	return a.Handle, nil
}

// DRMModeGetResourcesCall issues DRM_IOCTL_MODE_GETRESOURCES.
func DRMModeGetResourcesCall(fd int, r *DRMModeCardRes) error {
	_, err := ioctl(fd, DRMIoctlModeGetResources, unsafe.Pointer(r), "DRM_IOCTL_MODE_GETRESOURCES")
	return err
}

// DRMModeGetPropertyCall issues DRM_IOCTL_MODE_GETPROPERTY.
func DRMModeGetPropertyCall(fd int, p *DRMModeGetProperty) error {
	_, err := ioctl(fd, DRMIoctlModeGetProperty, unsafe.Pointer(p), "DRM_IOCTL_MODE_GETPROPERTY")
	return err
}

// DRMModeGetPropBlobCall issues DRM_IOCTL_MODE_GETPROPBLOB.
func DRMModeGetPropBlobCall(fd int, b *DRMModeGetBlob) error {
	_, err := ioctl(fd, DRMIoctlModeGetPropBlob, unsafe.Pointer(b), "DRM_IOCTL_MODE_GETPROPBLOB")
	return err
}

// DRMModeRmFBCall issues DRM_IOCTL_MODE_RMFB.
func DRMModeRmFBCall(fd int, fbID uint32) error {
	_, err := ioctl(fd, DRMIoctlModeRmFB, unsafe.Pointer(&fbID), "DRM_IOCTL_MODE_RMFB")
	return err
}

// DRMModeCreateDumbCall issues DRM_IOCTL_MODE_CREATE_DUMB.
func DRMModeCreateDumbCall(fd int, c *DRMModeCreateDumb) error {
	_, err := ioctl(fd, DRMIoctlModeCreateDumb, unsafe.Pointer(c), "DRM_IOCTL_MODE_CREATE_DUMB")
	return err
}

// DRMModeMapDumbCall issues DRM_IOCTL_MODE_MAP_DUMB and returns the fake
// mmap offset for handle on fd.
func DRMModeMapDumbCall(fd int, handle uint32) (uint64, error) {
	a := DRMModeMapDumb{Handle: handle}
	if _, err := ioctl(fd, DRMIoctlModeMapDumb, unsafe.Pointer(&a), "DRM_IOCTL_MODE_MAP_DUMB"); err != nil {
		return 0, err
	}
	return a.Offset, nil
}

// DRMModeDestroyDumbCall issues DRM_IOCTL_MODE_DESTROY_DUMB.
func DRMModeDestroyDumbCall(fd int, handle uint32) error {
	a := DRMModeDestroyDumb{Handle: handle}
	_, err := ioctl(fd, DRMIoctlModeDestroyDumb, unsafe.Pointer(&a), "DRM_IOCTL_MODE_DESTROY_DUMB")
	return err
}

// DRMModeGetPlaneResCall issues DRM_IOCTL_MODE_GETPLANERESOURCES.
func DRMModeGetPlaneResCall(fd int, r *DRMModeGetPlaneRes) error {
	_, err := ioctl(fd, DRMIoctlModeGetPlaneRes, unsafe.Pointer(r), "DRM_IOCTL_MODE_GETPLANERESOURCES")
	return err
}

// DRMModeGetPlaneCall issues DRM_IOCTL_MODE_GETPLANE.
func DRMModeGetPlaneCall(fd int, p *DRMModeGetPlane) error {
	_, err := ioctl(fd, DRMIoctlModeGetPlane, unsafe.Pointer(p), "DRM_IOCTL_MODE_GETPLANE")
	return err
}

// DRMModeAddFB2Call issues DRM_IOCTL_MODE_ADDFB2; on success c.FBID is the
// new framebuffer, which the caller must remove with DRMModeRmFBCall.
func DRMModeAddFB2Call(fd int, c *DRMModeFBCmd2) error {
	_, err := ioctl(fd, DRMIoctlModeAddFB2, unsafe.Pointer(c), "DRM_IOCTL_MODE_ADDFB2")
	return err
}

// DRMModeObjGetPropertiesCall issues DRM_IOCTL_MODE_OBJ_GETPROPERTIES.
func DRMModeObjGetPropertiesCall(fd int, o *DRMModeObjGetProperties) error {
	_, err := ioctl(fd, DRMIoctlModeObjGetProperties, unsafe.Pointer(o), "DRM_IOCTL_MODE_OBJ_GETPROPERTIES")
	return err
}
