package emulated_test

import (
	"fmt"
	"log"
	"os"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
)

// Allocate an emulated buffer (rounded up to whole pages), write to it
// through a mapping inside a CPU-access bracket (a no-op here, required for
// kernel DMA-BUFs), and describe it.
func ExampleAlloc() {
	b, err := emulated.Alloc(5000, "example")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	m, err := b.Map(dmabuf.ProtReadWrite)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	err = b.CPUAccess(dmabuf.Write, func() error {
		_, err := m.WriteAt([]byte("hello"), 0)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	info, err := b.Stat()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Size%int64(os.Getpagesize()) == 0, info.Size >= 5000, info.Exporter, info.Name)
	fmt.Println(info.Kind, "-", emulated.Label)
	// Output:
	// true true emulated example
	// emulated - emulated, CPU only, not importable by any device
}
