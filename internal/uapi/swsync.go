package uapi

import (
	"structs"
	"unsafe"
)

// sw_sync (drivers/dma-buf/sw_sync.c, debugfs sync/sw_sync): a software
// fence timeline for tests. Opening the debugfs node creates a timeline;
// closing it signals every fence still pending on it.

// SwSyncNameLen is the size of sw_sync_create_fence_data.name.
const SwSyncNameLen = 32

// SwSyncCreateFenceData is struct sw_sync_create_fence_data.
type SwSyncCreateFenceData struct {
	_     structs.HostLayout
	Value uint32
	Name  [SwSyncNameLen]byte
	Fence int32 // out
}

// Request numbers.
var (
	SwSyncIocCreateFence = iowr('W', 0, sizeof[SwSyncCreateFenceData]())
	SwSyncIocInc         = iow('W', 1, sizeof[uint32]())
)

// SwSyncCreateFenceCall issues SW_SYNC_IOC_CREATE_FENCE on a timeline fd and
// returns a new sync_file fd, owned by the caller, that signals when the
// timeline reaches value. name is cut to 31 bytes.
func SwSyncCreateFenceCall(timelineFD int, value uint32, name string) (int, error) {
	a := SwSyncCreateFenceData{Value: value, Fence: -1}
	copy(a.Name[:SwSyncNameLen-1], name)
	if _, err := ioctl(timelineFD, SwSyncIocCreateFence, unsafe.Pointer(&a), "SW_SYNC_IOC_CREATE_FENCE"); err != nil {
		return -1, err
	}
	return int(a.Fence), nil
}

// SwSyncIncCall issues SW_SYNC_IOC_INC: it advances the timeline by inc,
// signalling the fences it passes.
func SwSyncIncCall(timelineFD int, inc uint32) error {
	_, err := ioctl(timelineFD, SwSyncIocInc, unsafe.Pointer(&inc), "SW_SYNC_IOC_INC")
	return err
}
