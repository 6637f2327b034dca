package udmabuf

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// DevicePath is the udmabuf device node.
const DevicePath = "/dev/udmabuf"

// The kernel's defaults for its module parameters.
const (
	DefaultSizeLimit = 64 << 20 // size_limit_mb=64
	DefaultListLimit = 1024     // list_limit=1024
)

// Where the running kernel publishes its limits (also for a built-in driver).
const (
	sizeLimitPath = "/sys/module/udmabuf/parameters/size_limit_mb"
	listLimitPath = "/sys/module/udmabuf/parameters/list_limit"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrInvalidRange means an offset or size is negative, zero, not a
	// multiple of the page size, overflows, or runs past the memfd's end.
	ErrInvalidRange = errors.New("udmabuf: invalid range")
	// ErrTooLarge means a request exceeds the kernel's size_limit_mb or
	// list_limit.
	ErrTooLarge = errors.New("udmabuf: over the kernel's limit")
	// ErrBadMemfd means an fd is not a memfd udmabuf accepts: not a memfd
	// (or hugetlbfs file), without F_SEAL_SHRINK, or with a write seal.
	ErrBadMemfd = errors.New("udmabuf: unusable memfd")
	// ErrClosed means the Device was closed.
	ErrClosed = errors.New("udmabuf: device closed")
)

// Limits are the kernel's limits for one udmabuf.
type Limits struct {
	// MaxSize is the largest buffer in bytes (size_limit_mb).
	MaxSize int64
	// MaxRanges is the most ranges CreateList accepts (list_limit).
	MaxRanges int
}

// Range is one piece of a memfd for CreateList.
type Range struct {
	// Memfd is the memfd; the caller keeps ownership.
	Memfd *os.File
	// Offset and Size are byte counts, multiples of the page size.
	Offset, Size int64
}

// Device is an open /dev/udmabuf.
//
// A Device is safe for concurrent use. Close is idempotent and nil-safe;
// other methods return ErrClosed after it. Close waits for a Create in
// progress (it does not block for long). If a Device becomes unreachable
// without Close, a cleanup closes its fd and the leak is counted.
type Device struct {
	mu      sync.RWMutex
	fd      int // -1 once closed
	limits  Limits
	cleanup runtime.Cleanup
}

// Open opens /dev/udmabuf read-write (close-on-exec) and reads the kernel's
// limits. The caller owns the Device and must Close it. Errors are
// *os.PathError naming the node (errors.Is(err, os.ErrNotExist) when the
// kernel lacks udmabuf, os.ErrPermission when the user may not use it),
// with a hint.
func Open() (*Device, error) {
	fd, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		perr := &os.PathError{Op: "open", Path: DevicePath, Err: err}
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("udmabuf: %w (kernel built without CONFIG_UDMABUF, or the udmabuf module is not loaded)", perr)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("udmabuf: %w (log in at a seat so systemd grants access, add a udev rule, or allocate through heapd)", perr)
		}
		return nil, fmt.Errorf("udmabuf: %w", perr)
	}
	d := &Device{fd: fd, limits: readLimits()}
	d.cleanup = runtime.AddCleanup(d, func(fd int) {
		leak.Collected("udmabuf")
		unix.Close(fd)
	}, fd)
	return d, nil
}

// readLimits reads the module parameters, falling back to the defaults.
func readLimits() Limits {
	sizeMB, _ := os.ReadFile(sizeLimitPath)
	list, _ := os.ReadFile(listLimitPath)
	return parseLimits(sizeMB, list)
}

// parseLimits turns the contents of the module parameters size_limit_mb
// and list_limit (nil when unreadable) into Limits: a value that is
// missing, not a number, not positive or too large for its field keeps
// the kernel's default, so both limits are always positive.
func parseLimits(sizeMB, list []byte) Limits {
	l := Limits{MaxSize: DefaultSizeLimit, MaxRanges: DefaultListLimit}
	if mb, ok := parseIntParam(sizeMB); ok && mb > 0 && mb <= math.MaxInt64>>20 {
		l.MaxSize = mb << 20
	}
	if n, ok := parseIntParam(list); ok && n > 0 && n <= math.MaxInt32 {
		l.MaxRanges = int(n)
	}
	return l
}

func parseIntParam(data []byte) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}

// Limits returns the kernel's limits as read when the Device was opened
// (the defaults when the kernel does not publish them). Zero on a nil
// Device. Safe for concurrent use.
func (d *Device) Limits() Limits {
	if d == nil {
		return Limits{}
	}
	return d.limits
}

// Close closes the device node. Buffers created from it stay valid. It is
// idempotent and safe on a nil Device.
func (d *Device) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	d.cleanup.Stop()
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// NewMemfd returns a new memfd of size bytes (rounded up to whole pages)
// made with MFD_ALLOW_SEALING and sealed with F_SEAL_SHRINK only, as
// udmabuf needs: it may grow, it may be written, and nothing can take its
// pages away from a udmabuf. The caller owns the returned file. name shows
// in /proc/<pid>/fd. Safe for concurrent use.
func NewMemfd(name string, size int64) (*os.File, error) {
	size, err := roundUp(size)
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("udmabuf: %w", os.NewSyscallError("memfd_create", err))
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udmabuf: memfd of %d bytes: %w", size, os.NewSyscallError("ftruncate", err))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udmabuf: %w", os.NewSyscallError("fcntl F_ADD_SEALS", err))
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// Create returns a new udmabuf of size bytes (rounded up to whole pages,
// like a DMA-BUF heap does) backed by a fresh sealed memfd that it does not
// keep: the buffer holds the pages. The caller owns the returned Buffer.
// On error no fd is left open. ErrClosed after Close or on a nil Device.
// Safe for concurrent use.
func (d *Device) Create(size int64) (*dmabuf.Buffer, error) {
	if d == nil {
		return nil, ErrClosed
	}
	rounded, err := roundUp(size)
	if err != nil {
		return nil, err
	}
	if err := d.checkTotal(rounded); err != nil {
		return nil, err
	}
	memfd, err := NewMemfd("heapd-udmabuf", rounded)
	if err != nil {
		return nil, err
	}
	defer memfd.Close()
	return d.CreateFromMemfd(memfd, 0, rounded)
}

// CreateFromMemfd returns a new udmabuf over size bytes of memfd starting at
// offset (UDMABUF_CREATE). Both must be page multiples and the range must
// lie within the memfd, which must carry F_SEAL_SHRINK and no write seal
// (NewMemfd makes such memfds). The caller keeps ownership of memfd; the
// buffer and the memfd share the memory. The caller owns the returned
// Buffer. On error no fd is left open. ErrClosed after Close or on a nil
// Device. Safe for concurrent use.
func (d *Device) CreateFromMemfd(memfd *os.File, offset, size int64) (*dmabuf.Buffer, error) {
	return d.CreateList([]Range{{Memfd: memfd, Offset: offset, Size: size}})
}

// CreateList returns one udmabuf made of the given ranges in order
// (UDMABUF_CREATE_LIST; a single range uses UDMABUF_CREATE). Each range
// follows CreateFromMemfd's rules; the total must be within Limits().MaxSize
// and the count within Limits().MaxRanges. The caller keeps the memfds and
// owns the returned Buffer. On error no fd is left open. ErrClosed after
// Close or on a nil Device. Safe for concurrent use.
func (d *Device) CreateList(ranges []Range) (*dmabuf.Buffer, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if err := d.validate(ranges); err != nil {
		return nil, err
	}
	items := make([]uapi.UdmabufCreateItem, len(ranges))
	for i, r := range ranges {
		items[i] = uapi.UdmabufCreateItem{Memfd: uint32(r.Memfd.Fd()), Offset: uint64(r.Offset), Size: uint64(r.Size)}
	}
	d.mu.RLock()
	if d.fd < 0 {
		d.mu.RUnlock()
		return nil, ErrClosed
	}
	var fd int
	var err error
	if len(items) == 1 {
		c := uapi.UdmabufCreate{Memfd: items[0].Memfd, Flags: uapi.UdmabufFlagsCloexec, Offset: items[0].Offset, Size: items[0].Size}
		fd, err = uapi.UdmabufCreateCall(d.fd, &c)
	} else {
		fd, err = uapi.UdmabufCreateListCall(d.fd, uapi.UdmabufFlagsCloexec, items)
	}
	d.mu.RUnlock()
	runtime.KeepAlive(ranges) // the memfds must stay open through the ioctl
	if err != nil {
		return nil, fmt.Errorf("udmabuf: create %d range(s): %w", len(items), err)
	}
	b, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udmabuf: %w", err)
	}
	return b, nil
}

// validate checks ranges against what the kernel will accept.
func (d *Device) validate(ranges []Range) error {
	if len(ranges) == 0 {
		return fmt.Errorf("udmabuf: no ranges given: %w", ErrInvalidRange)
	}
	if len(ranges) > d.limits.MaxRanges {
		return fmt.Errorf("udmabuf: %d ranges, the kernel accepts at most %d (udmabuf.list_limit): %w", len(ranges), d.limits.MaxRanges, ErrTooLarge)
	}
	var total int64
	for i, r := range ranges {
		if err := checkRange(r.Offset, r.Size); err != nil {
			return fmt.Errorf("udmabuf: range %d: %w", i, err)
		}
		if total > math.MaxInt64-r.Size {
			return fmt.Errorf("udmabuf: range %d: total size overflows: %w", i, ErrInvalidRange)
		}
		total += r.Size
		if err := checkMemfd(r.Memfd, r.Offset, r.Size); err != nil {
			return fmt.Errorf("udmabuf: range %d: %w", i, err)
		}
	}
	return d.checkTotal(total)
}

func (d *Device) checkTotal(total int64) error {
	if total > d.limits.MaxSize {
		return fmt.Errorf("udmabuf: %d bytes exceed the kernel's limit of %d (raise udmabuf.size_limit_mb, or use a DMA-BUF heap): %w", total, d.limits.MaxSize, ErrTooLarge)
	}
	return nil
}

// checkRange checks alignment, sign and overflow of one range.
func checkRange(offset, size int64) error {
	page := int64(unix.Getpagesize())
	switch {
	case size <= 0:
		return fmt.Errorf("size %d: a range needs at least one page: %w", size, ErrInvalidRange)
	case offset < 0:
		return fmt.Errorf("negative offset %d: %w", offset, ErrInvalidRange)
	case offset%page != 0:
		return fmt.Errorf("offset %d is not a multiple of the %d-byte page size: %w", offset, page, ErrInvalidRange)
	case size%page != 0:
		return fmt.Errorf("size %d is not a multiple of the %d-byte page size: %w", size, page, ErrInvalidRange)
	case offset > math.MaxInt64-size:
		return fmt.Errorf("offset %d + size %d overflows: %w", offset, size, ErrInvalidRange)
	}
	return nil
}

// checkMemfd checks that f is a memfd udmabuf accepts and that the range
// lies inside it.
func checkMemfd(f *os.File, offset, size int64) error {
	if f == nil {
		return fmt.Errorf("nil memfd: %w", ErrBadMemfd)
	}
	fd := int(f.Fd())
	defer runtime.KeepAlive(f)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("%q is not a memfd (F_GET_SEALS: %v): create one with NewMemfd: %w", f.Name(), err, ErrBadMemfd)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return fmt.Errorf("memfd %q lacks F_SEAL_SHRINK: create it with MFD_ALLOW_SEALING and add the seal, or use NewMemfd: %w", f.Name(), ErrBadMemfd)
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		return fmt.Errorf("memfd %q carries F_SEAL_WRITE or F_SEAL_FUTURE_WRITE, which udmabuf refuses: use a memfd without write seals: %w", f.Name(), ErrBadMemfd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if offset+size > st.Size {
		return fmt.Errorf("offset %d + size %d runs past the end of memfd %q (%d bytes): %w", offset, size, f.Name(), st.Size, ErrInvalidRange)
	}
	return nil
}

// roundUp rounds a requested size up to whole pages.
func roundUp(size int64) (int64, error) {
	page := int64(unix.Getpagesize())
	if size <= 0 {
		return 0, fmt.Errorf("udmabuf: size %d: a buffer needs at least 1 byte: %w", size, ErrInvalidRange)
	}
	if size > math.MaxInt64-(page-1) {
		return 0, fmt.Errorf("udmabuf: size %d overflows when rounded up to %d-byte pages: %w", size, page, ErrInvalidRange)
	}
	return (size + page - 1) &^ (page - 1), nil
}
