package dmaheap_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
)

// Allocate 8 MiB of physically contiguous memory under whatever name the
// running kernel gives its CMA heap.
func ExampleResolveCMA() {
	heaps, err := dmaheap.List()
	if err != nil {
		log.Fatal(err)
	}
	r, err := dmaheap.ResolveCMA(heaps)
	if err != nil {
		log.Fatal(err) // says which option or boot parameter is missing
	}
	fmt.Println(r) // the choice, and why every other heap was passed over

	h, err := dmaheap.Open(r.Heap.Name)
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	buf, err := h.Alloc(8 << 20)
	if errors.Is(err, dmaheap.ErrNoMemory) {
		log.Fatal(err) // reports CmaFree and CmaTotal
	}
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()

	m, err := buf.Map(dmabuf.ProtReadWrite)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	err = buf.CPUAccess(dmabuf.Write, func() error {
		clear(m.Bytes())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// List the heaps of a captured tree instead of the running system.
func ExampleConfig_List() {
	cfg := &dmaheap.Config{
		DevDir:            "capture/dev",
		SysDir:            "capture/sys",
		ProcDir:           "capture/proc",
		AllowRegularNodes: true, // a capture holds regular files, not device nodes
	}
	heaps, err := cfg.List()
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range heaps {
		fmt.Printf("%-20s %-7v %s:%s %v %s\n", h.Name, h.Backing, h.Owner, h.Group, h.Mode, h.Problems)
	}
}
