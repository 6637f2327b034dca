package uapi

import (
	"testing"
	"unsafe"
)

// Pins the sw_sync numbers and layout to their x86-64 values (the ioctls are
// defined in drivers/dma-buf/sw_sync.c; there is no uapi header).
func TestSwSyncAMD64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"SW_SYNC_IOC_CREATE_FENCE", SwSyncIocCreateFence, 0xc0285700},
		{"SW_SYNC_IOC_INC", SwSyncIocInc, 0x40045701},
		{"sizeof sw_sync_create_fence_data", unsafe.Sizeof(SwSyncCreateFenceData{}), 40},
		{"offsetof sw_sync_create_fence_data.name", unsafe.Offsetof(SwSyncCreateFenceData{}.Name), 4},
		{"offsetof sw_sync_create_fence_data.fence", unsafe.Offsetof(SwSyncCreateFenceData{}.Fence), 36},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}
