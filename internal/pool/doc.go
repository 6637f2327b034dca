// Package pool is heapd's prefetch pool: per (heap, size class) it keeps a
// bounded number of freshly allocated, pre-faulted buffers that no client
// has ever seen, refilled in the background, so that the kernel's zeroing
// of new memory happens off the request path.
//
// Isolation: a pooled buffer is allocated by the pool, touched only by the
// pool (one write of zero per page, which leaves the kernel-zeroed
// contents as they were) and handed out at most once. A buffer that was
// handed out is never taken back or reused, so no data can cross from one
// client to another. The pool keeps no duplicate of a handed-out fd.
//
// Accounting: pooled buffers belong to heapd until handed out; they are
// charged to no user (the ledger charges the client when the handler
// commits the allocation) and bounded by Config.MaxBytes in total. Pools
// of contiguous (CMA) heaps are drained and not refilled while the heap's
// CmaFree is below Config.CMAReserve, and contiguous heaps are pooled only
// when named in Config.Heaps.
//
// The pool needs whatever the heaps it wraps need (access to
// /dev/dma_heap/*, /dev/udmabuf); it adds no privilege of its own.
package pool
