package uapi

import (
	"structs"
	"unsafe"
)

// DMA-BUF heaps (linux/dma-heap.h).

// DMAHeapAllocationData is struct dma_heap_allocation_data.
type DMAHeapAllocationData struct {
	_         structs.HostLayout
	Len       uint64
	FD        uint32 // out
	FDFlags   uint32
	HeapFlags uint64
}

// DMAHeapAllocationDataV0 is the 16-byte layout of the first heap ABI
// (len and fd/fd_flags only), which the kernel still accepts.
type DMAHeapAllocationDataV0 struct {
	_       structs.HostLayout
	Len     uint64
	FD      uint32
	FDFlags uint32
}

// DMAHeapAllocationDataExt is a larger-than-current argument (the proposed
// charge_pid_fd extension plus padding). The kernel zero-checks nothing past
// what it knows and copies back only the known part.
type DMAHeapAllocationDataExt struct {
	_           structs.HostLayout
	Len         uint64
	FD          uint32
	FDFlags     uint32
	HeapFlags   uint64
	ChargePidFD uint32
	Pad         uint32
}

// DMA-BUF (linux/dma-buf.h).

// DMABufSync is struct dma_buf_sync.
type DMABufSync struct {
	_     structs.HostLayout
	Flags uint64
}

// DMA_BUF_SYNC_* flags.
const (
	DMABufSyncRead  = 1 << 0
	DMABufSyncWrite = 2 << 0
	DMABufSyncRW    = DMABufSyncRead | DMABufSyncWrite
	DMABufSyncStart = 0 << 2
	DMABufSyncEnd   = 1 << 2
)

// DMABufExportSyncFile is struct dma_buf_export_sync_file; the import struct
// has the same layout.
type DMABufExportSyncFile struct {
	_     structs.HostLayout
	Flags uint32
	FD    int32
}

// DMABufImportSyncFile is struct dma_buf_import_sync_file.
type DMABufImportSyncFile = DMABufExportSyncFile

// DMABufNameLen is DMA_BUF_NAME_LEN: names hold at most DMABufNameLen-1 bytes.
const DMABufNameLen = 32

// DMABufMagic is DMA_BUF_MAGIC, the f_type of the dma-buf pseudo filesystem.
const DMABufMagic = 0x444d4142

// udmabuf (linux/udmabuf.h).

// UdmabufCreate is struct udmabuf_create.
type UdmabufCreate struct {
	_      structs.HostLayout
	Memfd  uint32
	Flags  uint32
	Offset uint64
	Size   uint64
}

// UdmabufCreateItem is struct udmabuf_create_item.
type UdmabufCreateItem struct {
	_      structs.HostLayout
	Memfd  uint32
	Pad    uint32
	Offset uint64
	Size   uint64
}

// UdmabufCreateList is the header of struct udmabuf_create_list; Count
// UdmabufCreateItem values follow it in memory.
type UdmabufCreateList struct {
	_     structs.HostLayout
	Flags uint32
	Count uint32
}

// UdmabufFlagsCloexec is UDMABUF_FLAGS_CLOEXEC.
const UdmabufFlagsCloexec = 0x01

// Request numbers.
var (
	DMAHeapIoctlAlloc    = iowr('H', 0x0, sizeof[DMAHeapAllocationData]())
	DMAHeapIoctlAllocV0  = iowr('H', 0x0, sizeof[DMAHeapAllocationDataV0]())
	DMAHeapIoctlAllocExt = iowr('H', 0x0, sizeof[DMAHeapAllocationDataExt]())

	DMABufIoctlSync           = iow('b', 0, sizeof[DMABufSync]())
	DMABufSetName             = iow('b', 1, sizeof[uintptr]()) // const char *
	DMABufIoctlExportSyncFile = iowr('b', 2, sizeof[DMABufExportSyncFile]())
	DMABufIoctlImportSyncFile = iow('b', 3, sizeof[DMABufImportSyncFile]())

	UdmabufCreateReq     = iow('u', 0x42, sizeof[UdmabufCreate]())
	UdmabufCreateListReq = iow('u', 0x43, sizeof[UdmabufCreateList]())
)

// DMAHeapAlloc issues DMA_HEAP_IOCTL_ALLOC on heapFD. On success a.FD is a new
// DMA-BUF fd owned by the caller.
func DMAHeapAlloc(heapFD int, a *DMAHeapAllocationData) error {
	_, err := ioctl(heapFD, DMAHeapIoctlAlloc, unsafe.Pointer(a), "DMA_HEAP_IOCTL_ALLOC")
	return err
}

// DMAHeapAllocV0 issues DMA_HEAP_IOCTL_ALLOC with the original 16-byte
// argument (kernel ABI compatibility).
func DMAHeapAllocV0(heapFD int, a *DMAHeapAllocationDataV0) error {
	_, err := ioctl(heapFD, DMAHeapIoctlAllocV0, unsafe.Pointer(a), "DMA_HEAP_IOCTL_ALLOC(v0)")
	return err
}

// DMAHeapAllocExt issues DMA_HEAP_IOCTL_ALLOC with a larger-than-current
// argument (kernel ABI compatibility).
func DMAHeapAllocExt(heapFD int, a *DMAHeapAllocationDataExt) error {
	_, err := ioctl(heapFD, DMAHeapIoctlAllocExt, unsafe.Pointer(a), "DMA_HEAP_IOCTL_ALLOC(ext)")
	return err
}

// DMABufIoctlSyncCall issues DMA_BUF_IOCTL_SYNC once (no EINTR retry: the
// caller decides).
func DMABufIoctlSyncCall(bufFD int, flags uint64) error {
	s := DMABufSync{Flags: flags}
	_, err := ioctl(bufFD, DMABufIoctlSync, unsafe.Pointer(&s), "DMA_BUF_IOCTL_SYNC")
	return err
}

// DMABufSetNameCall issues DMA_BUF_SET_NAME. name must be NUL-terminated.
func DMABufSetNameCall(bufFD int, name []byte) error {
	if len(name) == 0 || name[len(name)-1] != 0 {
		panic("uapi: DMABufSetNameCall needs a NUL-terminated name")
	}
	_, err := ioctl(bufFD, DMABufSetName, unsafe.Pointer(&name[0]), "DMA_BUF_SET_NAME")
	return err
}

// DMABufExportSyncFileCall issues DMA_BUF_IOCTL_EXPORT_SYNC_FILE and returns
// a new sync_file fd owned by the caller.
func DMABufExportSyncFileCall(bufFD int, flags uint32) (int, error) {
	a := DMABufExportSyncFile{Flags: flags, FD: -1}
	if _, err := ioctl(bufFD, DMABufIoctlExportSyncFile, unsafe.Pointer(&a), "DMA_BUF_IOCTL_EXPORT_SYNC_FILE"); err != nil {
		return -1, err
	}
	return int(a.FD), nil
}

// DMABufImportSyncFileCall issues DMA_BUF_IOCTL_IMPORT_SYNC_FILE. The caller
// keeps ownership of syncFD.
func DMABufImportSyncFileCall(bufFD int, flags uint32, syncFD int) error {
	a := DMABufImportSyncFile{Flags: flags, FD: int32(syncFD)}
	_, err := ioctl(bufFD, DMABufIoctlImportSyncFile, unsafe.Pointer(&a), "DMA_BUF_IOCTL_IMPORT_SYNC_FILE")
	return err
}

// UdmabufCreateCall issues UDMABUF_CREATE on devFD (/dev/udmabuf) and
// returns the new DMA-BUF fd, owned by the caller.
func UdmabufCreateCall(devFD int, c *UdmabufCreate) (int, error) {
	r, err := ioctl(devFD, UdmabufCreateReq, unsafe.Pointer(c), "UDMABUF_CREATE")
	if err != nil {
		return -1, err
	}
	return int(r), nil
}

// UdmabufCreateListCall issues UDMABUF_CREATE_LIST with the given items and
// returns the new DMA-BUF fd, owned by the caller.
func UdmabufCreateListCall(devFD int, flags uint32, items []UdmabufCreateItem) (int, error) {
	hdr := sizeof[UdmabufCreateList]()
	buf := make([]uint64, (hdr+uintptr(len(items))*sizeof[UdmabufCreateItem]()+7)/8)
	base := unsafe.Pointer(&buf[0])
	*(*UdmabufCreateList)(base) = UdmabufCreateList{Flags: flags, Count: uint32(len(items))}
	for i, it := range items {
		*(*UdmabufCreateItem)(unsafe.Add(base, hdr+uintptr(i)*sizeof[UdmabufCreateItem]())) = it
	}
	r, err := ioctl(devFD, UdmabufCreateListReq, base, "UDMABUF_CREATE_LIST")
	if err != nil {
		return -1, err
	}
	return int(r), nil
}
