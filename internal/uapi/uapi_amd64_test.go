package uapi

import (
	"testing"
	"unsafe"
)

// Pins every request number and layout to the values the kernel headers give
// for x86-64 (../shared kernel-abi notes, checked against include/uapi).
func TestRequestNumbersAMD64(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"DMA_HEAP_IOCTL_ALLOC", DMAHeapIoctlAlloc, 0xc0184800},
		{"DMA_HEAP_IOCTL_ALLOC(v0)", DMAHeapIoctlAllocV0, 0xc0104800},
		{"DMA_BUF_IOCTL_SYNC", DMABufIoctlSync, 0x40086200},
		{"DMA_BUF_SET_NAME", DMABufSetName, 0x40086201},
		{"DMA_BUF_IOCTL_EXPORT_SYNC_FILE", DMABufIoctlExportSyncFile, 0xc0086202},
		{"DMA_BUF_IOCTL_IMPORT_SYNC_FILE", DMABufIoctlImportSyncFile, 0x40086203},
		{"UDMABUF_CREATE", UdmabufCreateReq, 0x40187542},
		{"UDMABUF_CREATE_LIST", UdmabufCreateListReq, 0x40087543},
		{"DRM_IOCTL_VERSION", DRMIoctlVersion, 0xc0406400},
		{"DRM_IOCTL_GEM_CLOSE", DRMIoctlGemClose, 0x40086409},
		{"DRM_IOCTL_GET_CAP", DRMIoctlGetCap, 0xc010640c},
		{"DRM_IOCTL_SET_CLIENT_CAP", DRMIoctlSetClientCap, 0x4010640d},
		{"DRM_IOCTL_PRIME_HANDLE_TO_FD", DRMIoctlPrimeHandleToFD, 0xc00c642d},
		{"DRM_IOCTL_PRIME_FD_TO_HANDLE", DRMIoctlPrimeFDToHandle, 0xc00c642e},
		{"DRM_IOCTL_MODE_GETRESOURCES", DRMIoctlModeGetResources, 0xc04064a0},
		{"DRM_IOCTL_MODE_GETPROPERTY", DRMIoctlModeGetProperty, 0xc04064aa},
		{"DRM_IOCTL_MODE_GETPROPBLOB", DRMIoctlModeGetPropBlob, 0xc01064ac},
		{"DRM_IOCTL_MODE_RMFB", DRMIoctlModeRmFB, 0xc00464af},
		{"DRM_IOCTL_MODE_CREATE_DUMB", DRMIoctlModeCreateDumb, 0xc02064b2},
		{"DRM_IOCTL_MODE_MAP_DUMB", DRMIoctlModeMapDumb, 0xc01064b3},
		{"DRM_IOCTL_MODE_DESTROY_DUMB", DRMIoctlModeDestroyDumb, 0xc00464b4},
		{"DRM_IOCTL_MODE_GETPLANERESOURCES", DRMIoctlModeGetPlaneRes, 0xc01064b5},
		{"DRM_IOCTL_MODE_GETPLANE", DRMIoctlModeGetPlane, 0xc02064b6},
		{"DRM_IOCTL_MODE_ADDFB2", DRMIoctlModeAddFB2, 0xc06864b8},
		{"DRM_IOCTL_MODE_OBJ_GETPROPERTIES", DRMIoctlModeObjGetProperties, 0xc02064b9},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestLayoutsAMD64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof dma_heap_allocation_data", unsafe.Sizeof(DMAHeapAllocationData{}), 24},
		{"offsetof dma_heap_allocation_data.fd", unsafe.Offsetof(DMAHeapAllocationData{}.FD), 8},
		{"offsetof dma_heap_allocation_data.fd_flags", unsafe.Offsetof(DMAHeapAllocationData{}.FDFlags), 12},
		{"offsetof dma_heap_allocation_data.heap_flags", unsafe.Offsetof(DMAHeapAllocationData{}.HeapFlags), 16},
		{"sizeof dma_heap_allocation_data(v0)", unsafe.Sizeof(DMAHeapAllocationDataV0{}), 16},
		{"sizeof dma_heap_allocation_data(ext)", unsafe.Sizeof(DMAHeapAllocationDataExt{}), 32},
		{"sizeof dma_buf_export_sync_file", unsafe.Sizeof(DMABufExportSyncFile{}), 8},
		{"sizeof udmabuf_create", unsafe.Sizeof(UdmabufCreate{}), 24},
		{"offsetof udmabuf_create.offset", unsafe.Offsetof(UdmabufCreate{}.Offset), 8},
		{"sizeof udmabuf_create_item", unsafe.Sizeof(UdmabufCreateItem{}), 24},
		{"sizeof udmabuf_create_list", unsafe.Sizeof(UdmabufCreateList{}), 8},
		{"sizeof drm_version", unsafe.Sizeof(DRMVersion{}), 64},
		{"offsetof drm_version.name_len", unsafe.Offsetof(DRMVersion{}.NameLen), 16},
		{"offsetof drm_version.name", unsafe.Offsetof(DRMVersion{}.Name), 24},
		{"offsetof drm_version.date_len", unsafe.Offsetof(DRMVersion{}.DateLen), 32},
		{"offsetof drm_version.desc", unsafe.Offsetof(DRMVersion{}.Desc), 56},
		{"sizeof drm_prime_handle", unsafe.Sizeof(DRMPrimeHandle{}), 12},
		{"sizeof drm_mode_card_res", unsafe.Sizeof(DRMModeCardRes{}), 64},
		{"sizeof drm_mode_get_property", unsafe.Sizeof(DRMModeGetProperty{}), 64},
		{"sizeof drm_mode_create_dumb", unsafe.Sizeof(DRMModeCreateDumb{}), 32},
		{"offsetof drm_mode_create_dumb.size", unsafe.Offsetof(DRMModeCreateDumb{}.Size), 24},
		{"sizeof drm_mode_get_plane_res", unsafe.Sizeof(DRMModeGetPlaneRes{}), 16},
		{"sizeof drm_mode_get_plane", unsafe.Sizeof(DRMModeGetPlane{}), 32},
		{"sizeof drm_mode_fb_cmd2", unsafe.Sizeof(DRMModeFBCmd2{}), 104},
		{"offsetof drm_mode_fb_cmd2.handles", unsafe.Offsetof(DRMModeFBCmd2{}.Handles), 20},
		{"offsetof drm_mode_fb_cmd2.pitches", unsafe.Offsetof(DRMModeFBCmd2{}.Pitches), 36},
		{"offsetof drm_mode_fb_cmd2.offsets", unsafe.Offsetof(DRMModeFBCmd2{}.Offsets), 52},
		{"offsetof drm_mode_fb_cmd2.modifier", unsafe.Offsetof(DRMModeFBCmd2{}.Modifier), 72},
		{"sizeof drm_mode_obj_get_properties", unsafe.Sizeof(DRMModeObjGetProperties{}), 32},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
