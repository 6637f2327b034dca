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
