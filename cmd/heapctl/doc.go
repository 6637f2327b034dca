// heapctl is the command-line face of heapd's library: `heapctl heaps`
// lists every heap under its logical name and what it maps to, `heapctl
// alloc` allocates, maps, fills and verifies a buffer through CPU-access
// bracketing. Every command prints a human table by default and JSON with
// `-o json`.
//
// heapctl needs read access to the heap nodes it allocates from
// (/dev/dma_heap/*, /dev/udmabuf); without any, it uses the emulated heap and
// says so.
package main
