package heap

import (
	"context"
	"errors"
	"fmt"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/emulated"
)

// kernelHeap allocates from one kernel DMA-BUF heap. It shares the
// dmaheap.Heap (and its fd) with every alias published for it.
type kernelHeap struct {
	h    *dmaheap.Heap
	info Info
	cfg  *dmaheap.Config
}

func (k *kernelHeap) Info() Info {
	i := k.info
	if i.Contiguous {
		if st, err := k.cfg.MemInfo(); err == nil && st.Present {
			i.CMATotal, i.CMAFree = st.Total, st.Free
		}
	}
	return i
}

func (k *kernelHeap) Alloc(ctx context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	if err := checkSize(k.info.Name, size, k.info.MaxSize); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	buf, err := k.h.Alloc(size)
	if err != nil {
		return nil, err
	}
	return nameBuffer(buf, opts.Name)
}

// nameBuffer sets the debug name, closing buf if that fails.
func nameBuffer(buf *dmabuf.Buffer, name string) (*dmabuf.Buffer, error) {
	if name == "" {
		return buf, nil
	}
	if err := buf.SetName(name); err != nil && !errors.Is(err, dmabuf.ErrNotSupported) {
		buf.Close()
		return nil, fmt.Errorf("naming buffer %q: %w", name, err)
	}
	return buf, nil
}

// emulatedHeap is the memfd heap: always available, CPU only.
type emulatedHeap struct{}

func (emulatedHeap) Info() Info {
	return Info{
		Name:    "emulated",
		Backend: BackendEmulated,
		Target:  "memfd",
		Note:    dmabuf.EmulatedLabel,
	}
}

func (emulatedHeap) Alloc(ctx context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	if err := checkSize("emulated", size, 0); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return emulated.Alloc(size, opts.Name)
}
