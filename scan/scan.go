package scan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// ErrNotSupported is returned by Scan where it is not implemented (any
// system but Linux).
var ErrNotSupported = errors.New("scan: not implemented on " + runtime.GOOS)

// Default roots of the kernel's file systems.
const (
	DefaultProcDir    = "/proc"
	DefaultSysDir     = "/sys"
	DefaultDevDir     = "/dev"
	DefaultDebugFSDir = "/sys/kernel/debug"
)

// Config says where Scan finds the kernel's files and what else it joins.
// A nil *Config, and any empty field, mean the real system paths and no
// extras. A Config is read-only once in use.
type Config struct {
	// ProcDir is the root of procfs: ProcDir/<pid>/fdinfo, maps, comm,
	// stat, and ProcDir/meminfo. Tests point it at a hand-made tree.
	ProcDir string
	// SysDir is the root of sysfs (the heap list, CMA areas).
	SysDir string
	// DevDir is the root of devtmpfs (heap nodes).
	DevDir string
	// DebugFSDir is the root of debugfs, where BufinfoPath lists every
	// buffer with its attached devices. Reading it needs root; without it
	// the scan still works, knowing only what processes hold.
	DebugFSDir string
	// NoBufinfo skips debugfs even when it is readable.
	NoBufinfo bool
	// Ledger, when not nil, is asked for heapd's ledger: which heapd client
	// owns which buffer. A Ledger error does not fail the scan; it becomes
	// a Problem. See Ledger.
	Ledger Ledger
	// Logger receives what the scan skipped and why, at debug level; nil
	// discards it.
	Logger *slog.Logger
}

func (c *Config) procDir() string {
	if c == nil || c.ProcDir == "" {
		return DefaultProcDir
	}
	return c.ProcDir
}

func (c *Config) sysDir() string {
	if c == nil || c.SysDir == "" {
		return DefaultSysDir
	}
	return c.SysDir
}

func (c *Config) devDir() string {
	if c == nil || c.DevDir == "" {
		return DefaultDevDir
	}
	return c.DevDir
}

func (c *Config) bufinfoPath() string {
	dir := DefaultDebugFSDir
	if c != nil && c.DebugFSDir != "" {
		dir = c.DebugFSDir
	}
	return filepath.Join(dir, filepath.FromSlash(BufinfoPath))
}

func (c *Config) noBufinfo() bool { return c != nil && c.NoBufinfo }

func (c *Config) logger() *slog.Logger {
	if c == nil || c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) ledger() Ledger {
	if c == nil {
		return nil
	}
	return c.Ledger
}

// Owner is heapd's ledger entry for one buffer: the client heapd allocated
// it for. It is a plain value.
type Owner struct {
	// Client is the client's name as heapd knows it.
	Client string `json:"client"`
	// PID and UID are the client's credentials as heapd saw them on its
	// socket (SO_PEERCRED); 0 when unknown.
	PID int    `json:"pid,omitempty"`
	UID uint32 `json:"uid,omitempty"`
	// Lease is heapd's id for the allocation, "" if none.
	Lease string `json:"lease,omitempty"`
	// Heap is the heapd heap name the buffer came from ("system",
	// "contiguous").
	Heap string `json:"heap,omitempty"`
}

// Ledger is where Scan gets heapd's owners from. heapd's client package
// provides one; Scan works without it.
//
// Owners returns the owner of every buffer heapd has handed out, keyed by
// the buffer's inode number (the "ino:" of its fdinfo, which
// dmabuf.Buffer.Stat reports as Info.Inode). It is called once per scan,
// after the walk, and must honour ctx. An error (heapd not running, no
// permission) is reported in Snapshot.Problems and the scan goes on.
type Ledger interface {
	Owners(ctx context.Context) (map[uint64]Owner, error)
}

// LedgerFunc adapts a function to Ledger.
type LedgerFunc func(ctx context.Context) (map[uint64]Owner, error)

// Owners calls f.
func (f LedgerFunc) Owners(ctx context.Context) (map[uint64]Owner, error) { return f(ctx) }

// Holder is one process's hold on one buffer.
type Holder struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	// FDs is how many of the process's fds refer to the buffer.
	FDs int `json:"fds"`
	// Maps is how many mappings of the buffer the process has, and Mapped
	// their length in bytes.
	Maps   int   `json:"maps"`
	Mapped int64 `json:"mapped_bytes"`
	// Share is this process's part of the buffer's size: the size split
	// evenly between all holders (a remainder goes a byte each to the
	// lowest pids), so the shares of a buffer add up to its size.
	Share int64 `json:"share"`
}

// Buffer is one DMA-BUF, joined from every process that holds it and from
// debugfs.
type Buffer struct {
	// Inode identifies the buffer system-wide.
	Inode uint64 `json:"inode"`
	// Size is the buffer size in bytes.
	Size int64 `json:"size"`
	// SizeEstimated is true when the buffer was seen only in mappings (no
	// readable fd, no bufinfo): Size is then the largest mapping and may
	// be less than the buffer.
	SizeEstimated bool `json:"size_estimated,omitempty"`
	// Exporter is the heap name for heap buffers ("system", "reserved"),
	// the exporting module otherwise ("udmabuf", "drm"); "" when only
	// mappings were seen.
	Exporter string `json:"exporter"`
	// Name is the buffer's debug name, "" if none.
	Name string `json:"name,omitempty"`
	// Count is the kernel's count of references to the buffer's file
	// (fds, mappings, importers); 0 when unknown.
	Count int64 `json:"count,omitempty"`
	// Holders are the processes that hold an fd for or a mapping of the
	// buffer, by pid. Empty when only the kernel or a process this user
	// may not read holds it (known from bufinfo).
	Holders []Holder `json:"holders"`
	// Devices are the attached devices (importers), from bufinfo; nil
	// when bufinfo was not read.
	Devices []string `json:"devices,omitempty"`
	// Fences are bufinfo's fence lines, for a buffer a device is still
	// working on.
	Fences []string `json:"fences,omitempty"`
	// Owner is heapd's ledger entry, nil when heapd did not allocate the
	// buffer or the ledger was not asked.
	Owner *Owner `json:"owner,omitempty"`
}

// Process is one process that holds at least one buffer.
type Process struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	// UID is the owner of ProcDir/<pid>: the process's effective user.
	UID  uint32 `json:"uid"`
	User string `json:"user,omitempty"`
	// Buffers is the number of distinct buffers held, FDs and Maps the
	// fds and mappings over all of them, Mapped the mappings' length.
	Buffers int   `json:"buffers"`
	FDs     int   `json:"fds"`
	Maps    int   `json:"maps"`
	Mapped  int64 `json:"mapped_bytes"`
	// Bytes is the full size of every buffer held; Share the proportional
	// part (see Holder.Share). Shares of all processes add up to the
	// bytes of all held buffers; Bytes counts a shared buffer once for
	// each holder.
	Bytes int64 `json:"bytes"`
	Share int64 `json:"share"`
}

// Heap is one exporter: a DMA-BUF heap of the kernel, or a module that
// exports buffers (udmabuf, drm).
type Heap struct {
	// Name is the exporter name buffers report: the kernel heap name for
	// heaps.
	Name string `json:"name"`
	// HeapdName is heapd's logical name for the heap ("system",
	// "contiguous"), "" if none.
	HeapdName string `json:"heapd_name,omitempty"`
	// Heap is true for a DMA-BUF heap (/dev/dma_heap/<name>), false for
	// another exporter.
	Heap bool `json:"heap"`
	// Contiguous reports a CMA heap.
	Contiguous bool `json:"contiguous"`
	// Buffers and Bytes count every buffer of this exporter the scan
	// found.
	Buffers int   `json:"buffers"`
	Bytes   int64 `json:"bytes"`
	// CMATotal and CMAFree are /proc/meminfo's CmaTotal and CmaFree, for
	// contiguous heaps. Every CMA heap draws on the same counters.
	CMATotal int64 `json:"cma_total,omitempty"`
	CMAFree  int64 `json:"cma_free,omitempty"`
}

// Stats say how much the scan saw.
type Stats struct {
	// Processes is the number of processes looked at.
	Processes int `json:"processes"`
	// Unreadable counts processes whose fds or mappings this user may not
	// read (another user's, without root). Kernel threads, which hold no
	// fds, are not counted.
	Unreadable int `json:"unreadable"`
	// AsRoot reports that the scan ran with effective uid 0: unreadable
	// processes are then hidden by something root cannot pass (another
	// PID namespace's procfs, a security module), not by permissions.
	AsRoot bool `json:"as_root"`
	// Vanished counts processes that exited during the scan.
	Vanished int `json:"vanished"`
	// Bufinfo reports whether debugfs bufinfo was read: Devices are
	// known, and buffers held by no readable process are listed.
	Bufinfo bool `json:"bufinfo"`
	// BufinfoSkipped reports that Config.NoBufinfo kept the scan from
	// reading it.
	BufinfoSkipped bool `json:"bufinfo_skipped,omitempty"`
	// Ledger reports whether heapd's ledger was joined.
	Ledger bool `json:"ledger"`
	// Duration is how long the scan took.
	Duration time.Duration `json:"duration_ns"`
}

// Snapshot is the result of one Scan. It is a plain value: nothing in it
// refers to the system any more.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Buffers are sorted by size, largest first.
	Buffers []Buffer `json:"buffers"`
	// Processes are sorted by proportional share, largest first.
	Processes []Process `json:"processes"`
	// Heaps are every kernel heap (even those with no buffers) and every
	// other exporter seen, sorted by bytes, largest first.
	Heaps []Heap `json:"heaps"`
	Stats Stats  `json:"stats"`
	// Problems are things the scan could not do that a person should
	// know about (an unreadable meminfo, a ledger error), one per line.
	Problems []string `json:"problems,omitempty"`
}

// Notes says what the scan could not see, for people, one line each:
// "12 processes unreadable: run as root", and that attached devices
// need debugfs (unless Config.NoBufinfo asked not to read it). Nil when
// the scan saw everything, and on a nil Snapshot.
func (s *Snapshot) Notes() []string {
	if s == nil {
		return nil
	}
	var out []string
	if n := s.Stats.Unreadable; n > 0 {
		what := fmt.Sprintf("%d processes unreadable", n)
		if n == 1 {
			what = "1 process unreadable"
		}
		if s.Stats.AsRoot {
			out = append(out, what+" even as root (hidden by a security module or a PID namespace)")
		} else {
			out = append(out, what+": run as root")
		}
	}
	switch {
	case s.Stats.Bufinfo, s.Stats.BufinfoSkipped:
	case s.Stats.AsRoot:
		out = append(out, "attached devices unknown: debugfs dma_buf/bufinfo not readable (mount debugfs on /sys/kernel/debug)")
	default:
		out = append(out, "attached devices unknown: debugfs dma_buf/bufinfo not readable (run as root with debugfs mounted)")
	}
	return out
}

// TotalBytes is the size of every buffer in the snapshot together.
func (s *Snapshot) TotalBytes() int64 {
	if s == nil {
		return 0
	}
	var n int64
	for _, b := range s.Buffers {
		n += b.Size
	}
	return n
}

// Scan walks every process of cfg.ProcDir (and debugfs, and the ledger)
// once and returns the joined view. cfg may be nil.
//
// It reads /proc/<pid>/fdinfo/<fd> of every fd (a DMA-BUF shows exp_name
// and ino there) and /proc/<pid>/maps (a mapped DMA-BUF shows as
// "/dmabuf:<name>"), so it finds buffers a process holds only as a
// mapping. It never opens, duplicates or keeps another process's fd, and
// needs no more than read access to fdinfo and maps: as an ordinary user
// it sees that user's processes and counts the others in
// Stats.Unreadable. Processes that exit meanwhile are counted in
// Stats.Vanished. Scan fails only when ProcDir cannot be listed or ctx
// ends.
//
// Scan keeps no state between calls and is safe for concurrent use.
func Scan(ctx context.Context, cfg *Config) (*Snapshot, error) {
	start := time.Now()
	w := newWalk(cfg)
	w.stats.AsRoot = os.Geteuid() == 0
	if err := w.run(ctx); err != nil {
		return nil, err
	}
	s := w.join(ctx)
	s.Time = start
	s.Stats.Duration = time.Since(start)
	return s, nil
}

// sortSnapshot puts the processes and heaps in their documented order
// (join builds the buffers in theirs).
func sortSnapshot(s *Snapshot) {
	slices.SortFunc(s.Processes, func(a, b Process) int {
		return cmp.Or(cmp.Compare(b.Share, a.Share), cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.PID, b.PID))
	})
	slices.SortFunc(s.Heaps, func(a, b Heap) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(b.CMATotal, a.CMATotal), strings.Compare(a.Name, b.Name))
	})
}

// share splits size between n holders: the first size%n get one byte
// more.
func share(size int64, n, i int) int64 {
	if n <= 0 {
		return 0
	}
	s := size / int64(n)
	if int64(i) < size%int64(n) {
		s++
	}
	return s
}
