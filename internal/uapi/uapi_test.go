package uapi

import (
	"testing"
	"unsafe"
)

// Architecture-independent facts: these must hold on every GOARCH, which is
// how the 32-bit layouts are checked (GOARCH=386 and arm test binaries).
func TestLayoutsAllArches(t *testing.T) {
	ptr := unsafe.Sizeof(uintptr(0))
	fb2 := uintptr(104)
	if unsafe.Alignof(uint64(0)) == 4 { // i386: u64 is 4-byte aligned
		fb2 = 100
	}
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof drm_version", unsafe.Sizeof(DRMVersion{}), 12 + 6*ptr + (ptr - 4)},
		{"sizeof drm_mode_fb_cmd2", unsafe.Sizeof(DRMModeFBCmd2{}), fb2},
		{"sizeof dma_heap_allocation_data", unsafe.Sizeof(DMAHeapAllocationData{}), 24},
		{"DMA_BUF_SET_NAME size field", (DMABufSetName >> iocSizeShift) & (1<<iocSizeBits - 1), ptr},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestIOCRejectsOversize(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("ioc accepted a size that does not fit the size field")
		}
	}()
	ioc(iocRead, 'x', 0, 1<<iocSizeBits)
}
