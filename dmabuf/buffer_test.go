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
