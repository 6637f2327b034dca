package uapi

import (
	"testing"
	"unsafe"
)

// Pins what drm_extra.go adds to the kernel's x86-64 values
// (include/uapi/drm/drm.h, drm_mode.h). Its other wrappers reuse the request
// numbers pinned in uapi_amd64_test.go.
func TestDRMExtraRequestNumbersAMD64(t *testing.T) {
	if DRMIoctlDropMaster != 0x641f {
		t.Errorf("DRM_IOCTL_DROP_MASTER = %#x, want 0x641f", DRMIoctlDropMaster)
	}
}

func TestDRMExtraLayoutsAMD64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof drm_mode_property_enum", unsafe.Sizeof(DRMModePropertyEnum{}), 40},
		{"offsetof drm_mode_property_enum.name", unsafe.Offsetof(DRMModePropertyEnum{}.Name), 8},
		{"offsetof drm_mode_get_property.name", unsafe.Offsetof(DRMModeGetProperty{}.Name), 24},
		{"offsetof drm_mode_get_property.count_values", unsafe.Offsetof(DRMModeGetProperty{}.CountValues), 56},
		{"offsetof drm_mode_get_plane.format_type_ptr", unsafe.Offsetof(DRMModeGetPlane{}.FormatTypePtr), 24},
		{"offsetof drm_mode_obj_get_properties.count_props", unsafe.Offsetof(DRMModeObjGetProperties{}.CountProps), 16},
		{"offsetof drm_mode_card_res.count_fbs", unsafe.Offsetof(DRMModeCardRes{}.CountFBs), 32},
		{"offsetof drm_mode_card_res.min_width", unsafe.Offsetof(DRMModeCardRes{}.MinWidth), 48},
		{"sizeof drm_mode_get_blob", unsafe.Sizeof(DRMModeGetBlob{}), 16},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
