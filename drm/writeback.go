package drm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
)

// Fence is a sync_file: a kernel fence that signals when some device work
// is done, here the out fence of an atomic commit (a writeback frame
// written, a CRTC's new state on screen). It owns the sync_file fd.
//
// Wait may run in several goroutines at once and Close may run
// concurrently with them: Close makes a pending Wait return ErrClosed.
// Close is idempotent and nil-safe. A Fence dropped without Close is
// closed by a cleanup and the leak is counted (tests fail on it).
type Fence struct {
	f       *os.File
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

// newFence takes ownership of the sync_file fd, also on error.
func newFence(fd int) (*Fence, error) {
	// Non-blocking makes os.File register the fd with the runtime's
	// poller, so Wait gets deadlines and is woken by Close.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "sync_file")
	fe := &Fence{f: f}
	fe.cleanup = runtime.AddCleanup(fe, func(f *os.File) {
		leak.Collected("sync_file")
		f.Close()
	}, f)
	return fe, nil
}

// FD returns the sync_file fd, still owned by the Fence (valid until
// Close), for passing to another API; -1 after Close or on nil.
func (fe *Fence) FD() int {
	if fe == nil || fe.closed.Load() {
		return -1
	}
	return int(fe.f.Fd())
}

// Signaled reports whether the fence has signalled, without waiting.
// ErrClosed after Close or on nil.
func (fe *Fence) Signaled() (bool, error) {
	if fe == nil || fe.closed.Load() {
		return false, ErrClosed
	}
	rc, err := fe.f.SyscallConn()
	if err != nil {
		return false, err
	}
	var ok bool
	var perr error
	if err := rc.Control(func(fd uintptr) { ok, perr = pollIn(int(fd), 0) }); err != nil {
		return false, fenceErr(err)
	}
	return ok, perr
}

// Wait blocks until the fence signals or ctx is done, and then returns
// ctx's error. A sync_file signals exactly once, so Wait after the signal
// returns nil at once. ErrClosed after (or during) Close, or on nil.
func (fe *Fence) Wait(ctx context.Context) error {
	if fe == nil || fe.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drm: waiting for fence: %w", err)
	}
	rc, err := fe.f.SyscallConn()
	if err != nil {
		return fenceErr(err)
	}
	stop := deadlineFromContext(ctx, fe.f)
	defer stop()
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var ok bool
		ok, perr = pollIn(int(fd), 0)
		return ok || perr != nil
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("drm: waiting for fence: %w", waitErr(ctx, err, fe.closed.Load()))
	}
	return nil
}

// waitErr translates the error of a wait on a pollable file: the context's
// error when it is done (the file's deadline can fire a moment before the
// context's own timer), ErrClosed when the file was closed meanwhile.
func waitErr(ctx context.Context, err error, closed bool) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if _, ok := ctx.Deadline(); ok {
			return context.DeadlineExceeded
		}
	}
	if closed {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return fenceErr(err)
}

// Close closes the sync_file. Idempotent and nil-safe.
func (fe *Fence) Close() error {
	if fe == nil || !fe.closed.CompareAndSwap(false, true) {
		return nil
	}
	fe.cleanup.Stop()
	return fe.f.Close()
}

// fenceErr maps the os package's closed-file error to ErrClosed.
func fenceErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}

// pollIn reports whether fd is readable (a sync_file: signalled; a DRM
// fd: events queued) within timeout milliseconds.
func pollIn(fd, timeout int) (bool, error) {
	for {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		if n > 0 && p[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return false, os.NewSyscallError("poll", unix.EBADF)
		}
		return n > 0 && p[0].Revents&unix.POLLIN != 0, nil
	}
}

// deadlineFromContext sets f's read deadline from ctx and moves it into the
// past when ctx is cancelled; the returned func undoes the hook.
func deadlineFromContext(ctx context.Context, f *os.File) (stop func()) {
	dl, _ := ctx.Deadline() // zero: none
	_ = f.SetReadDeadline(dl)
	done := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = f.SetReadDeadline(time.Unix(1, 0))
	})
	return func() {
		if !cancel() {
			<-done // it ran or runs: let it finish before the next wait sets a deadline
		}
	}
}

// WritebackFormats returns the pixel formats the writeback connector
// connID can write (its WRITEBACK_PIXEL_FORMATS blob). Needs
// EnableWriteback. ErrNotSupported when the connector has no such
// property (it is not a writeback connector). Safe for concurrent use.
func (d *Device) WritebackFormats(connID uint32) ([]Format, error) {
	props, err := d.Properties(connID, ObjectConnector)
	if err != nil {
		return nil, err
	}
	blob, ok := props.Value("WRITEBACK_PIXEL_FORMATS")
	if !ok || blob == 0 || blob > 1<<32-1 {
		return nil, fmt.Errorf("drm: connector %d of %s has no WRITEBACK_PIXEL_FORMATS: %w", connID, d, ErrNotSupported)
	}
	data, err := d.PropertyBlobData(uint32(blob))
	if err != nil {
		return nil, err
	}
	return parseFormatList(data)
}

// parseFormatList decodes a blob of u32 fourcc codes in host byte order.
func parseFormatList(b []byte) ([]Format, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("drm: format list of %d bytes is not whole u32s", len(b))
	}
	out := make([]Format, len(b)/4)
	for i := range out {
		out[i] = Format(binary.NativeEndian.Uint32(b[4*i:]))
	}
	return out, nil
}
