// Package scan finds out who holds which DMA-BUF on this system: the
// answer to "CMA is exhausted, but by whom?".
//
// Scan walks /proc/<pid>/fdinfo/<fd> of every process (a DMA-BUF fd shows
// its size, exporter, name and inode there) and /proc/<pid>/maps (a mapped
// DMA-BUF shows as "/dmabuf:<name>" with its inode, even after the fd was
// closed), reads debugfs dma_buf/bufinfo when it may (attached devices,
// and buffers only the kernel holds), and joins it all into three views:
// per buffer (holders by pid with fd and map counts), per process (bytes
// held and the proportional share of shared buffers) and per heap (buffers,
// bytes, CmaTotal/CmaFree for contiguous heaps). heapd's own ledger of
// which client owns which buffer is joined when a Ledger is given.
//
// Scan never opens another process's fds: reading fdinfo and maps is all
// it does, which needs the same permission as ptrace-reading the process
// (PTRACE_MODE_READ). As an ordinary user it sees that user's processes
// and counts the others in Stats.Unreadable ("12 processes unreadable: run
// as root"); root sees everything, and with debugfs mounted the attached
// devices too. Processes that exit during the scan are counted, not
// reported as errors.
//
// The parsers of the kernel's text, ParseMaps and ParseBufinfo, are pure
// functions for any captured text; the fdinfo parser is dmabuf.ParseFDInfo.
//
// Scan keeps no state and is safe for concurrent use. It works on Linux
// only (elsewhere it returns ErrNotSupported).
//
// Limits: a buffer mapped by an exporter that swaps the mapping's file
// (some DRM drivers map the GEM object rather than the DMA-BUF) is seen
// through its fds only; processes that share one fd table (clone with
// CLONE_FILES but not CLONE_THREAD) each count the shared fds.
package scan
