package heap

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/udmabuf"
)

// udmabufHeap turns fresh sealed memfds into DMA-BUFs.
type udmabufHeap struct {
	d *udmabuf.Device
}

func (u *udmabufHeap) Info() Info {
	return Info{
		Name:    "udmabuf",
		Backend: BackendUdmabuf,
		Target:  udmabuf.DevicePath,
		Properties: Properties{
			MaxSize:          u.d.Limits().MaxSize,
			DeviceImportable: true,
		},
		Note: "memfd pages (shmem): not contiguous; import needs an IOMMU or scatter-gather DMA",
	}
}

func (u *udmabufHeap) Alloc(ctx context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	if err := checkSize("udmabuf", size, u.d.Limits().MaxSize); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	buf, err := u.d.Create(size)
	if err != nil {
		return nil, err
	}
	return nameBuffer(buf, opts.Name)
}

// discoverUdmabuf opens /dev/udmabuf when it exists. Over a captured tree
// (cfg.Root set) there is no udmabuf device to open.
func discoverUdmabuf(cfg *Config, f *Found) {
	if cfg.Root != "" {
		return
	}
	d, err := udmabuf.Open()
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			f.Problems = append(f.Problems, fmt.Sprintf("udmabuf unusable: %v", err))
		}
		return
	}
	f.Udmabuf = &udmabufHeap{d: d}
	f.Closers = append(f.Closers, d)
}
