package uapi

import (
	"testing"
	"unsafe"
)

// Pins what drm_atomic.go adds to the kernel's x86-64 values
// (include/uapi/drm/drm.h, drm_mode.h).
func TestDRMAtomicRequestNumbersAMD64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"DRM_IOCTL_SET_MASTER", DRMIoctlSetMaster, 0x641e},
		{"DRM_IOCTL_AUTH_MAGIC", DRMIoctlAuthMagic, 0x40046411},
		{"DRM_IOCTL_MODE_GETCRTC", DRMIoctlModeGetCRTC, 0xc06864a1},
		{"DRM_IOCTL_MODE_GETENCODER", DRMIoctlModeGetEncoder, 0xc01464a6},
		{"DRM_IOCTL_MODE_GETCONNECTOR", DRMIoctlModeGetConnector, 0xc05064a7},
		{"DRM_IOCTL_MODE_ATOMIC", DRMIoctlModeAtomic, 0xc03864bc},
		{"DRM_IOCTL_MODE_CREATEPROPBLOB", DRMIoctlModeCreatePropBlob, 0xc01064bd},
		{"DRM_IOCTL_MODE_DESTROYPROPBLOB", DRMIoctlModeDestroyPropBlob, 0xc00464be},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestDRMAtomicLayoutsAMD64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof drm_mode_modeinfo", unsafe.Sizeof(DRMModeModeInfo{}), 68},
		{"offsetof drm_mode_modeinfo.vdisplay", unsafe.Offsetof(DRMModeModeInfo{}.VDisplay), 14},
		{"offsetof drm_mode_modeinfo.vrefresh", unsafe.Offsetof(DRMModeModeInfo{}.VRefresh), 24},
		{"offsetof drm_mode_modeinfo.name", unsafe.Offsetof(DRMModeModeInfo{}.Name), 36},
		{"sizeof drm_mode_get_connector", unsafe.Sizeof(DRMModeGetConnector{}), 80},
		{"offsetof drm_mode_get_connector.count_modes", unsafe.Offsetof(DRMModeGetConnector{}.CountModes), 32},
		{"offsetof drm_mode_get_connector.connector_id", unsafe.Offsetof(DRMModeGetConnector{}.ConnectorID), 48},
		{"offsetof drm_mode_get_connector.connection", unsafe.Offsetof(DRMModeGetConnector{}.Connection), 60},
		{"sizeof drm_mode_get_encoder", unsafe.Sizeof(DRMModeGetEncoder{}), 20},
		{"sizeof drm_mode_crtc", unsafe.Sizeof(DRMModeCRTC{}), 104},
		{"offsetof drm_mode_crtc.mode_valid", unsafe.Offsetof(DRMModeCRTC{}.ModeValid), 32},
		{"offsetof drm_mode_crtc.mode", unsafe.Offsetof(DRMModeCRTC{}.Mode), 36},
		{"sizeof drm_mode_atomic", unsafe.Sizeof(DRMModeAtomic{}), 56},
		{"offsetof drm_mode_atomic.objs_ptr", unsafe.Offsetof(DRMModeAtomic{}.ObjsPtr), 8},
		{"offsetof drm_mode_atomic.user_data", unsafe.Offsetof(DRMModeAtomic{}.UserData), 48},
		{"sizeof drm_mode_create_blob", unsafe.Sizeof(DRMModeCreateBlob{}), 16},
		{"offsetof drm_mode_create_blob.blob_id", unsafe.Offsetof(DRMModeCreateBlob{}.BlobID), 12},
		{"sizeof drm_mode_destroy_blob", unsafe.Sizeof(DRMModeDestroyBlob{}), 4},
		{"sizeof drm_auth", unsafe.Sizeof(DRMAuth{}), 4},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
