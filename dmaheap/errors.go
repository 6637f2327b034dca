package dmaheap

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Test with errors.Is; an *Error matches its sentinel and
// also the errno or fs error underneath (errors.Is(err, fs.ErrNotExist),
// errors.Is(err, unix.ENOMEM) and so on).
var (
	// ErrNotExist means no heap of that name exists on this kernel (or the
	// name is not a plain heap name).
	ErrNotExist = errors.New("dmaheap: heap does not exist")
	// ErrPermission means the heap node may not be opened by this process.
	ErrPermission = errors.New("dmaheap: permission denied")
	// ErrNoMemory means the heap could not satisfy an allocation: for a CMA
	// heap the area is exhausted or too fragmented.
	ErrNoMemory = errors.New("dmaheap: out of memory")
	// ErrInvalidSize means an allocation size was zero, negative, or too
	// large to round up to whole pages. Such a size never reaches the
	// kernel.
	ErrInvalidSize = errors.New("dmaheap: invalid size")
	// ErrClosed means the Heap was already closed.
	ErrClosed = errors.New("dmaheap: heap closed")
	// ErrNotSupported means DMA-BUF heaps do not exist on this operating
	// system.
	ErrNotSupported = errors.New("dmaheap: not supported")
)

// Error is the error type of Open and Alloc. It says what failed, on which
// heap, why, and what to do about it.
//
// errors.Is matches both Kind (one of the package's sentinels, or nil) and
// Err (typically an *os.PathError or *os.SyscallError carrying the errno).
// An Error holds no fd and is not modified after it is returned, so it may
// be shared between goroutines.
type Error struct {
	// Op is the operation: "open" or "alloc".
	Op string
	// Heap is the heap name as the caller gave it.
	Heap string
	// Kind is the sentinel this error matches, or nil.
	Kind error
	// Err is the underlying error.
	Err error
	// Detail explains the cause and the fix in words; it may be empty.
	Detail string
}

// Error renders "dmaheap: <op> heap <name>: <cause>: <what to do>".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dmaheap: %s heap %q", e.Op, e.Heap)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	} else if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Kind.Error(), "dmaheap: "))
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns Kind and Err, so errors.Is and errors.As see both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// kindError is a message that matches a sentinel.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// fmtSize renders a byte count for people.
func fmtSize(n int64) string {
	const kib, mib, gib = 1 << 10, 1 << 20, 1 << 30
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/mib)
	case n >= kib && n%kib == 0:
		return fmt.Sprintf("%d KiB", n/kib)
	}
	return fmt.Sprintf("%d bytes", n)
}
