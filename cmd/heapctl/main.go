// Command heapctl lists DMA-BUF heaps, allocates and verifies buffers, and
// (as heapd grows) explains resolution and shows who holds what. See
// `heapctl --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "heapctl: %v\n", err)
		os.Exit(1)
	}
}
