package dmabuf

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestNewRejectsNonDMABuf(t *testing.T) {
	testutil.CheckFDs(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := New(int(r.Fd())); !errors.Is(err, ErrNotDMABuf) {
		t.Fatalf("New(pipe) = %v, want ErrNotDMABuf", err)
	}
	// An unsealed memfd is not an emulated buffer either.
	fd, err := unix.MemfdCreate("x", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := New(fd); !errors.Is(err, ErrNotDMABuf) {
		t.Fatalf("New(unsealed memfd) = %v, want ErrNotDMABuf", err)
	}
	if _, err := New(-1); !errors.Is(err, ErrNotDMABuf) {
		t.Fatalf("New(-1) = %v, want ErrNotDMABuf", err)
	}
}

func TestNilAndClosed(t *testing.T) {
	var b *Buffer
	if err := b.Close(); err != nil {
		t.Fatalf("nil Close: %v", err)
	}
	if b.FD() != -1 {
		t.Fatal("nil FD != -1")
	}
	if _, err := b.Dup(); !errors.Is(err, ErrClosed) {
		t.Fatalf("nil Dup = %v", err)
	}
}

// Close must not wait for a call in flight (a BeginCPUAccess can block on a
// device fence for ever); the fd is closed when that call returns, so its
// number cannot be reused under it.
func TestCloseDoesNotWaitForCallInFlight(t *testing.T) {
	testutil.CheckFDs(t)
	fd, err := unix.MemfdCreate("inflight", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, 4096); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	b, err := New(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	entered, release, done := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		done <- b.withFD(func(fd int) error {
			close(entered)
			<-release
			_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			return err
		})
	}()
	<-entered
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b.FD() != -1 {
		t.Error("FD() after Close != -1")
	}
	if _, err := b.Dup(); !errors.Is(err, ErrClosed) {
		t.Errorf("Dup after Close = %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the call in flight lost its fd: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd != -1 || b.users != 0 {
		t.Errorf("after the last call: fd %d users %d; want the fd closed", b.fd, b.users)
	}
}

// sealedMemfd returns an emulated Buffer (as package emulated makes them).
func sealedMemfd(t *testing.T, size int64) *Buffer {
	t.Helper()
	fd, err := unix.MemfdCreate(EmulatedNamePrefix+"reopen", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	b, err := New(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return b
}

// Reopen makes a new open file (not a duplicate fd) of the same memory,
// with the access mode asked for.
func TestReopen(t *testing.T) {
	testutil.CheckFDs(t)
	const size = 8192
	b := sealedMemfd(t, size)
	defer b.Close()
	rw, err := b.Reopen(unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	ro, err := b.Reopen(unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if rw.Kind() != KindEmulated || rw.Size() != size || ro.Size() != size {
		t.Fatalf("reopened: kind %v size %d/%d, want emulated %d", rw.Kind(), rw.Size(), ro.Size(), size)
	}
	var st0, st1 unix.Stat_t
	if err := unix.Fstat(b.FD(), &st0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(ro.FD(), &st1); err != nil {
		t.Fatal(err)
	}
	if st0.Ino != st1.Ino {
		t.Fatalf("reopened inode %d, want %d", st1.Ino, st0.Ino)
	}
	// A new open file: its own offset and access mode.
	if _, err := unix.Pwrite(rw.FD(), []byte("hi"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Seek(rw.FD(), 10, 0); err != nil {
		t.Fatal(err)
	}
	if off, _ := unix.Seek(b.FD(), 0, 1); off != 0 {
		t.Fatalf("original's offset moved to %d with the reopened file's: a duplicate, not a new file", off)
	}
	got := make([]byte, 2)
	if _, err := unix.Pread(ro.FD(), got, 100); err != nil || string(got) != "hi" {
		t.Fatalf("read through the reopened file: %q, %v", got, err)
	}
	if _, err := unix.Pwrite(ro.FD(), []byte("x"), 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("write to the O_RDONLY reopen = %v, want EBADF", err)
	}
}

func TestReopenErrors(t *testing.T) {
	testutil.CheckFDs(t)
	var nilBuf *Buffer
	if _, err := nilBuf.Reopen(unix.O_RDWR); !errors.Is(err, ErrClosed) {
		t.Fatalf("nil Reopen = %v, want ErrClosed", err)
	}
	b := sealedMemfd(t, 4096)
	if _, err := b.Reopen(unix.O_RDWR | unix.O_TRUNC); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Reopen(O_TRUNC) = %v, want ErrInvalidArgument", err)
	}
	if _, err := b.Reopen(unix.O_ACCMODE); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Reopen(O_ACCMODE) = %v, want ErrInvalidArgument", err)
	}
	b.Close()
	if _, err := b.Reopen(unix.O_RDWR); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reopen after Close = %v, want ErrClosed", err)
	}
	// A kernel DMA-BUF cannot be reopened; that needs a real one (VM
	// tier), so only the kind check is exercised here.
	k := &Buffer{fd: -1, kind: KindKernel}
	if _, err := k.Reopen(unix.O_RDWR); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Reopen(kernel) = %v, want ErrNotSupported", err)
	}
}
