package dmabuf

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
)

// Prot is the access a Mapping allows.
type Prot int

// Mapping protections. A kernel DMA-BUF mapped with ProtWrite needs an fd
// opened O_RDWR (heap allocations and udmabuf are).
const (
	ProtRead      Prot = unix.PROT_READ
	ProtWrite     Prot = unix.PROT_WRITE
	ProtReadWrite Prot = unix.PROT_READ | unix.PROT_WRITE
)

// String returns "r", "w" or "rw".
func (p Prot) String() string {
	switch p {
	case ProtRead:
		return "r"
	case ProtWrite:
		return "w"
	case ProtReadWrite:
		return "rw"
	}
	return fmt.Sprintf("Prot(%d)", int(p))
}

// Compile-time checks: a Mapping reads and writes like a file at offsets.
var (
	_ io.ReaderAt = (*Mapping)(nil)
	_ io.WriterAt = (*Mapping)(nil)
	_ io.Closer   = (*Mapping)(nil)
)

// Mapping is a shared (MAP_SHARED) CPU mapping of a whole Buffer.
//
// ReadAt, WriteAt, Len and Close are safe for concurrent use; Close is
// idempotent and nil-safe, and ReadAt/WriteAt after it return ErrClosed.
// The mapping owns no fd: it stays valid after its Buffer is closed. If a
// Mapping becomes unreachable without Close, a cleanup unmaps it and the leak
// is counted (tests fail on it): always Close.
//
// For a kernel DMA-BUF, bracket CPU access with Buffer.BeginCPUAccess and
// EndCPUAccess (or Buffer.CPUAccess) so caches are kept coherent with
// devices.
type Mapping struct {
	mu      sync.RWMutex
	data    []byte // nil once closed
	prot    Prot
	cleanup runtime.Cleanup
}

// Map maps the whole buffer with MAP_SHARED and the given protection, and
// returns a Mapping the caller must Close. The Buffer keeps its fd; the
// mapping holds its own reference to the memory. ErrClosed after Close or on
// a nil Buffer; ErrInvalidArgument for a prot other than ProtRead, ProtWrite
// or ProtReadWrite. Safe for concurrent use.
func (b *Buffer) Map(prot Prot) (*Mapping, error) {
	switch prot {
	case ProtRead, ProtWrite, ProtReadWrite:
	default:
		return nil, fmt.Errorf("dmabuf: Map(%v): use ProtRead, ProtWrite or ProtReadWrite: %w", prot, ErrInvalidArgument)
	}
	if b == nil {
		return nil, ErrClosed
	}
	if b.size <= 0 || uint64(b.size) > math.MaxInt {
		return nil, fmt.Errorf("dmabuf: Map: buffer size %d cannot be mapped in this address space: %w", b.size, ErrNotSupported)
	}
	var data []byte
	err := b.withFD(func(fd int) error {
		var err error
		data, err = unix.Mmap(fd, 0, int(b.size), int(prot), unix.MAP_SHARED)
		if err == nil {
			return nil
		}
		err = os.NewSyscallError("mmap", err)
		if errors.Is(err, unix.EACCES) && prot&ProtWrite != 0 {
			return fmt.Errorf("dmabuf: Map(%v): %w (the fd is read-only: allocate or export it with O_RDWR, or map ProtRead)", prot, err)
		}
		return fmt.Errorf("dmabuf: Map(%v): %w", prot, err)
	})
	if err != nil {
		return nil, err
	}
	m := &Mapping{data: data, prot: prot}
	m.cleanup = runtime.AddCleanup(m, func(data []byte) {
		leak.Collected("dmabuf mapping")
		_ = unix.Munmap(data)
	}, data)
	return m, nil
}

// Bytes returns the mapped memory itself, or nil after Close or on a nil
// Mapping. The slice is valid only until Close: touching it afterwards
// crashes the program (SIGSEGV), so do not let it escape the owner of the
// Mapping, and do not Close while another goroutine uses it. Writing through
// a mapping made without ProtWrite crashes too.
func (m *Mapping) Bytes() []byte {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data
}

// Len returns the mapped length in bytes (the buffer's size), or 0 after
// Close or on a nil Mapping. Safe for concurrent use.
func (m *Mapping) Len() int {
	if m == nil {
		return 0
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.data)
}

// Prot returns the protection the mapping was made with; 0 on a nil
// Mapping. Safe for concurrent use.
func (m *Mapping) Prot() Prot {
	if m == nil {
		return 0
	}
	return m.prot
}

// ReadAt copies mapped bytes at off into p, following io.ReaderAt: a read
// that reaches the end returns the bytes read and io.EOF. A negative off is
// ErrOutOfRange; a mapping without ProtRead is ErrNotSupported. Safe for
// concurrent use.
func (m *Mapping) ReadAt(p []byte, off int64) (int, error) {
	if m == nil {
		return 0, ErrClosed
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.data == nil {
		return 0, ErrClosed
	}
	if m.prot&ProtRead == 0 {
		return 0, fmt.Errorf("dmabuf: ReadAt on a mapping made with %v (map with ProtRead): %w", m.prot, ErrNotSupported)
	}
	if off < 0 {
		return 0, fmt.Errorf("dmabuf: ReadAt offset %d: %w", off, ErrOutOfRange)
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the mapping at off. Unlike a file a mapping cannot
// grow: a write that does not fit entirely writes nothing and returns
// ErrOutOfRange, as does a negative off; a mapping without ProtWrite is
// ErrNotSupported. Safe for concurrent use (concurrent writes to overlapping
// ranges race like any shared memory).
func (m *Mapping) WriteAt(p []byte, off int64) (int, error) {
	if m == nil {
		return 0, ErrClosed
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.data == nil {
		return 0, ErrClosed
	}
	if m.prot&ProtWrite == 0 {
		return 0, fmt.Errorf("dmabuf: WriteAt on a mapping made with %v (map with ProtWrite): %w", m.prot, ErrNotSupported)
	}
	if off < 0 || off > int64(len(m.data)) || int64(len(p)) > int64(len(m.data))-off {
		return 0, fmt.Errorf("dmabuf: WriteAt %d bytes at offset %d of a %d-byte mapping: %w", len(p), off, len(m.data), ErrOutOfRange)
	}
	return copy(m.data[off:], p), nil
}

// Close unmaps the memory. It is idempotent and safe on a nil Mapping; it
// waits for ReadAt/WriteAt calls in progress (they never block).
func (m *Mapping) Close() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		return nil
	}
	m.cleanup.Stop()
	err := unix.Munmap(m.data)
	m.data = nil
	if err != nil {
		return os.NewSyscallError("munmap", err)
	}
	return nil
}
