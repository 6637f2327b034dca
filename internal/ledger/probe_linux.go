package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
)

var fdinfoBuf = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// fileCount returns the count: line of /proc/self/fdinfo/fd: references
// to the DMA-BUF's file (procfs's own already subtracted by the kernel).
func fileCount(fd int) (int64, error) {
	path := "/proc/self/fdinfo/" + strconv.Itoa(fd)
	f, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(f)
	bp := fdinfoBuf.Get().(*[]byte)
	defer fdinfoBuf.Put(bp)
	buf := *bp
	n := 0
	for n < len(buf) {
		m, err := unix.Read(f, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return parseCount(buf[:n])
}

// countReader reads a DMA-BUF's count: through its fdinfo file, kept
// open: a pread at offset 0 makes procfs print it afresh, one syscall
// instead of open+read+close (about 8x cheaper). The open fdinfo file
// does not hold a reference to the DMA-BUF.
type countReader struct{ fd int }

// openCount opens /proc/self/fdinfo/fd.
func openCount(fd int) (countReader, error) {
	path := "/proc/self/fdinfo/" + strconv.Itoa(fd)
	f, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return countReader{-1}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return countReader{f}, nil
}

// read returns the count: now.
func (c countReader) read() (int64, error) {
	bp := fdinfoBuf.Get().(*[]byte)
	defer fdinfoBuf.Put(bp)
	buf := *bp
	for {
		n, err := unix.Pread(c.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("pread fdinfo", err)
		}
		return parseCount(buf[:n])
	}
}

// info returns the whole fdinfo now (count, inode, name).
func (c countReader) info() (dmabuf.Info, error) {
	bp := fdinfoBuf.Get().(*[]byte)
	defer fdinfoBuf.Put(bp)
	buf := *bp
	for {
		n, err := unix.Pread(c.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dmabuf.Info{}, os.NewSyscallError("pread fdinfo", err)
		}
		return dmabuf.ParseFDInfo(buf[:n])
	}
}

func (c *countReader) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// parseCount finds "count:\t<n>" in fdinfo text.
func parseCount(b []byte) (int64, error) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if v, ok := bytes.CutPrefix(line, []byte("count:")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("fdinfo count %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("fdinfo has no count: line (not a DMA-BUF?)")
}

// leaseHeld reports whether any file of probe's inode other than probe
// itself is open for writing: the kernel refuses a write lease then.
func leaseHeld(probe int) (bool, error) {
	_, err := unix.FcntlInt(uintptr(probe), unix.F_SETLEASE, unix.F_WRLCK)
	switch err {
	case nil:
		_, _ = unix.FcntlInt(uintptr(probe), unix.F_SETLEASE, unix.F_UNLCK)
		return false, nil
	case unix.EAGAIN, unix.EBUSY:
		return true, nil
	}
	return true, os.NewSyscallError("fcntl F_SETLEASE (is fs.leases-enable 0?)", err)
}
