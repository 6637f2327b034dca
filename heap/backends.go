package heap

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

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
	if k.info.Contiguous {
		// Fail fast on what can never fit. Below CmaTotal the kernel
		// decides: CmaFree does not count CMA pages lent to movable
		// allocations, which cma_alloc migrates back.
		if st, err := k.cfg.MemInfo(); err == nil && st.Present && st.Total > 0 && size > st.Total {
			return nil, fmt.Errorf("heap %s: %d bytes can never fit: the whole CMA area is %d bytes (CmaFree %d); allocate less or boot with a larger cma=: %w",
				k.info.Name, size, st.Total, st.Free, ErrNoMemory)
		}
	}
	buf, err := k.h.Alloc(size)
	if err != nil {
		return nil, err
	}
	return nameBuffer(buf, opts.Name)
}

// IsNoMemory reports whether err means a heap ran out of memory: heapd's
// fail-fast ErrNoMemory, dmaheap.ErrNoMemory or ENOMEM from the kernel.
func IsNoMemory(err error) bool {
	return errors.Is(err, ErrNoMemory) || errors.Is(err, dmaheap.ErrNoMemory) || errors.Is(err, unix.ENOMEM)
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
