package dmabuf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrNotDMABuf means an fd handed to New is neither a DMA-BUF nor a
	// heapd emulated buffer (a sealed memfd).
	ErrNotDMABuf = errors.New("dmabuf: not a DMA-BUF")
	// ErrClosed means the Buffer (or Mapping) was already closed.
	ErrClosed = errors.New("dmabuf: buffer closed")
	// ErrNotSupported means the kernel or the buffer kind does not offer the
	// operation (for example sync_file export on an old kernel, or any
	// device operation on an emulated buffer).
	ErrNotSupported = errors.New("dmabuf: operation not supported")
	// ErrInvalidName means a buffer name is too long or contains a byte the
	// kernel's debug output cannot carry (NUL or a newline).
	ErrInvalidName = errors.New("dmabuf: invalid buffer name")
	// ErrOutOfRange means an offset or length falls outside a Mapping.
	ErrOutOfRange = errors.New("dmabuf: offset out of range")
	// ErrInvalidArgument means a parameter (a Prot, a Direction) has a value
	// outside its documented set.
	ErrInvalidArgument = errors.New("dmabuf: invalid argument")
)

// Kind says what kind of memory backs a Buffer. The zero value is
// KindKernel.
type Kind int

const (
	// KindKernel is a real kernel DMA-BUF that devices can import.
	KindKernel Kind = iota
	// KindEmulated is a sealed memfd: CPU only, not importable by any
	// device.
	KindEmulated
)

// EmulatedLabel is how an emulated buffer is described wherever it shows up.
const EmulatedLabel = "emulated, CPU only, not importable by any device"

// String returns "dmabuf" or "emulated".
func (k Kind) String() string {
	switch k {
	case KindKernel:
		return "dmabuf"
	case KindEmulated:
		return "emulated"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Buffer owns one DMA-BUF (or emulated buffer) file descriptor.
//
// A Buffer is safe for concurrent use. Close is idempotent and nil-safe; any
// other method after Close returns ErrClosed. Close never waits for a call
// in flight (BeginCPUAccess may block on a device fence): the fd is closed
// when the last such call returns. If a Buffer becomes unreachable without
// Close, a cleanup closes its fd and the leak is counted (tests fail on it):
// always Close.
type Buffer struct {
	mu      sync.Mutex
	fd      int  // -1 once the fd is really closed
	closing bool // Close was called
	users   int  // calls in flight holding fd
	kind    Kind
	size    int64
	cleanup runtime.Cleanup
}

// New takes ownership of fd on success and returns a Buffer for it. fd must
// be a DMA-BUF (fstatfs magic DMA_BUF_MAGIC) or an emulated buffer (a memfd
// with F_SEAL_SHRINK and F_SEAL_GROW). On error the caller keeps ownership of
// fd; ErrNotDMABuf says the fd is of another kind.
func New(fd int) (*Buffer, error) {
	if fd < 0 {
		return nil, fmt.Errorf("dmabuf.New: invalid fd %d: %w", fd, ErrNotDMABuf)
	}
	kind, err := kindOf(fd)
	if err != nil {
		return nil, err
	}
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return nil, os.NewSyscallError("lseek", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		return nil, os.NewSyscallError("lseek", err)
	}
	return wrap(fd, kind, size), nil
}

// wrap returns a Buffer owning fd, already classified.
func wrap(fd int, kind Kind, size int64) *Buffer {
	b := &Buffer{fd: fd, kind: kind, size: size}
	b.cleanup = runtime.AddCleanup(b, func(fd int) {
		leak.Collected("dmabuf")
		unix.Close(fd)
	}, fd)
	return b
}

// NewFromFile takes ownership of f on success (the Buffer keeps a duplicate
// of f's fd and f is closed) and returns a Buffer. On error f is left open
// and still owned by the caller. A nil f is an error.
func NewFromFile(f *os.File) (*Buffer, error) {
	if f == nil {
		return nil, fmt.Errorf("dmabuf.NewFromFile: nil file: %w", ErrNotDMABuf)
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, os.NewSyscallError("dup", err)
	}
	unix.CloseOnExec(fd)
	b, err := New(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f.Close()
	return b, nil
}

// IsDMABuf reports whether fd refers to a kernel DMA-BUF (an emulated
// buffer is not one). The caller keeps ownership of fd. Safe for concurrent
// use.
func IsDMABuf(fd int) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false, os.NewSyscallError("fstatfs", err)
	}
	return uint32(st.Type) == uapi.DMABufMagic, nil
}

// kindOf classifies fd.
func kindOf(fd int) (Kind, error) {
	ok, err := IsDMABuf(fd)
	if err != nil {
		return 0, fmt.Errorf("dmabuf.New: fd %d: %w", fd, err)
	}
	if ok {
		return KindKernel, nil
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err == nil && seals&unix.F_SEAL_SHRINK != 0 && seals&unix.F_SEAL_GROW != 0 {
		return KindEmulated, nil
	}
	return 0, fmt.Errorf("dmabuf.New: fd %d is neither a DMA-BUF nor a sealed memfd (pass an fd from a DMA-BUF heap, udmabuf or a PRIME export): %w", fd, ErrNotDMABuf)
}

// Kind returns whether b is a kernel DMA-BUF or an emulated buffer. It
// stays valid after Close. A nil Buffer reports KindKernel.
func (b *Buffer) Kind() Kind {
	if b == nil {
		return KindKernel
	}
	return b.kind
}

// Emulated reports whether b is an emulated (CPU-only) buffer. It stays
// valid after Close; a nil Buffer is not emulated.
func (b *Buffer) Emulated() bool { return b != nil && b.kind == KindEmulated }

// Size returns the buffer's size in bytes as the kernel reported it
// (lseek SEEK_END) when the Buffer was created; a DMA-BUF never changes size.
// It stays valid after Close; a nil Buffer has size 0.
func (b *Buffer) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// FD returns the raw fd, still owned by b. It is valid until Close; do not
// close it. Returns -1 after Close or on a nil Buffer.
func (b *Buffer) FD() int {
	if b == nil {
		return -1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return -1
	}
	return b.fd
}

// withFD runs f with the fd held open: a concurrent Close returns at once
// and the fd is closed when f returns, so f may block without blocking Close
// and the fd number cannot be reused under f.
func (b *Buffer) withFD(f func(fd int) error) error {
	if b == nil {
		return ErrClosed
	}
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return ErrClosed
	}
	b.users++
	fd := b.fd
	b.mu.Unlock()
	defer b.release()
	return f(fd)
}

// release ends one withFD call and performs a Close that waited for it.
func (b *Buffer) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.users--
	if b.closing && b.users == 0 && b.fd >= 0 {
		// Close already returned; nobody is left to report an error to.
		_ = unix.Close(b.fd)
		b.fd = -1
	}
}

// Dup returns a new fd (O_CLOEXEC) for the same buffer, owned by the
// caller. Closing one does not affect the other. ErrClosed after Close or on
// a nil Buffer. Safe for concurrent use.
func (b *Buffer) Dup() (int, error) {
	nfd := -1
	err := b.withFD(func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		}
		return nil
	})
	return nfd, err
}

// Clone returns a new Buffer for the same memory, owning a duplicate fd;
// each must be closed. ErrClosed after Close or on a nil Buffer. Safe for
// concurrent use.
func (b *Buffer) Clone() (*Buffer, error) {
	fd, err := b.Dup()
	if err != nil {
		return nil, err
	}
	nb, err := New(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return nb, nil
}

// Reopen returns a new Buffer for the same emulated buffer that owns a
// file of its own: the memfd opened again through /proc/self/fd with flags
// (unix.O_RDWR, unix.O_RDONLY or unix.O_WRONLY; O_CLOEXEC is added). Unlike
// Dup it makes a new open file, which the kernel counts on its own (in the
// inode's writers, for leases); the open is checked against the memfd's
// mode like any other. The caller owns the new Buffer and must Close it; b
// is unchanged. Kind and size are b's, so no further syscall is made.
// Only an emulated buffer can be opened again (ErrNotSupported for a kernel
// DMA-BUF); other flags are ErrInvalidArgument; ErrClosed after Close or on
// a nil Buffer. Needs /proc mounted. Safe for concurrent use.
func (b *Buffer) Reopen(flags int) (*Buffer, error) {
	if b == nil {
		return nil, ErrClosed
	}
	if b.kind != KindEmulated {
		return nil, fmt.Errorf("dmabuf: Reopen: only an emulated buffer (a memfd) can be opened again; Dup a DMA-BUF instead: %w", ErrNotSupported)
	}
	if flags&^unix.O_ACCMODE != 0 || flags&unix.O_ACCMODE == unix.O_ACCMODE {
		return nil, fmt.Errorf("dmabuf: Reopen: flags %#o: want O_RDWR, O_RDONLY or O_WRONLY alone: %w", flags, ErrInvalidArgument)
	}
	var nb *Buffer
	err := b.withFD(func(fd int) error {
		path := "/proc/self/fd/" + strconv.Itoa(fd)
		nfd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dmabuf: Reopen: %w (is /proc mounted?)", &os.PathError{Op: "open", Path: path, Err: err})
		}
		nb = wrap(nfd, b.kind, b.size)
		return nil
	})
	return nb, err
}

// File returns an *os.File for a duplicate fd (O_CLOEXEC), owned by the
// caller. Closing one does not affect the other. ErrClosed after Close or on
// a nil Buffer. Safe for concurrent use.
func (b *Buffer) File() (*os.File, error) {
	fd, err := b.Dup()
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("dmabuf:%d", fd)), nil
}

// Close closes the fd. It is idempotent and safe on a nil Buffer, and safe
// to call concurrently with any other method: those started before Close
// finish on the still-open fd (which is closed when the last returns), those
// started after it return ErrClosed. Mappings made with Map stay valid until
// they are closed themselves, and fds from Dup or File stay open.
func (b *Buffer) Close() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return nil
	}
	b.closing = true
	b.cleanup.Stop()
	if b.users > 0 {
		return nil // the last call in flight closes the fd
	}
	err := unix.Close(b.fd)
	b.fd = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
