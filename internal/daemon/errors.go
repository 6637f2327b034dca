package daemon

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/protocol"
)

// toWire translates an error into the Error sent to the client. This is
// the one place where Go errors become wire codes.
func toWire(err error) *protocol.Error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, heap.ErrRetired):
		return &protocol.Error{Code: protocol.CodeDeviceGone, Message: err.Error()}
	case errors.Is(err, heap.ErrUnknownDevice):
		return &protocol.Error{Code: protocol.CodeUnknownDevice, Message: err.Error()}
	case errors.Is(err, heap.ErrNoHeap):
		return &protocol.Error{Code: protocol.CodeNoHeap, Message: err.Error()}
	case errors.Is(err, heap.ErrUnknownHeap):
		return &protocol.Error{Code: protocol.CodeUnknownHeap, Message: err.Error()}
	case errors.Is(err, heap.ErrInvalidSize), errors.Is(err, dmabuf.ErrInvalidName), errors.Is(err, unix.EINVAL):
		return &protocol.Error{Code: protocol.CodeInvalidArgument, Message: err.Error()}
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		// heapd's fd table (or the system's) is full: a passing state.
		return &protocol.Error{Code: protocol.CodeBusy, Message: "heapd is out of file descriptors, try again later: " + err.Error()}
	case errors.Is(err, unix.ENOMEM):
		return &protocol.Error{Code: protocol.CodeNoMemory, Message: err.Error()}
	case errors.Is(err, dmabuf.ErrNotSupported), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP):
		return &protocol.Error{Code: protocol.CodeNotSupported, Message: err.Error()}
	case errors.Is(err, heap.ErrClosed), errors.Is(err, context.Canceled):
		return &protocol.Error{Code: protocol.CodeShuttingDown, Message: err.Error()}
	}
	return &protocol.Error{Code: protocol.CodeInternal, Message: err.Error()}
}
