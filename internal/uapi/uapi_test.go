package uapi

import (
	"testing"
	"unsafe"
)

// Architecture-independent facts, and the variants of the heap allocation
// argument that no kernel header describes (so testdata/abi/gen.sh cannot
// pin them): these must hold on every GOARCH. The kernel's own numbers and
// layouts per architecture are in abi_<goarch>_test.go, generated from its
// headers and checked by TestABI; `make abi` runs that for arm and arm64
// too and builds it for 386.
func TestLayoutsAllArches(t *testing.T) {
	ptr := unsafe.Sizeof(uintptr(0))
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof drm_version", unsafe.Sizeof(DRMVersion{}), 12 + 6*ptr + (ptr - 4)},
		{"sizeof dma_heap_allocation_data", unsafe.Sizeof(DMAHeapAllocationData{}), 24},
		{"sizeof dma_heap_allocation_data(v0)", unsafe.Sizeof(DMAHeapAllocationDataV0{}), 16},
		{"sizeof dma_heap_allocation_data(ext)", unsafe.Sizeof(DMAHeapAllocationDataExt{}), 32},
		{"DMA_HEAP_IOCTL_ALLOC(v0)", DMAHeapIoctlAllocV0, 0xc0104800},
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
