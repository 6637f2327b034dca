package emulated

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var page = int64(unix.Getpagesize())

func TestAllocSizes(t *testing.T) {
	testutil.CheckFDs(t)
	for _, tc := range []struct {
		size, want int64
	}{
		{1, page},
		{page - 1, page},
		{page, page},
		{page + 1, 2 * page},
		{5000, 2 * page},
		{1 << 20, 1 << 20},
	} {
		b, err := Alloc(tc.size, "sizes")
		if err != nil {
			t.Fatalf("Alloc(%d): %v", tc.size, err)
		}
		if got := b.Size(); got != tc.want {
			t.Errorf("Alloc(%d).Size() = %d, want %d", tc.size, got, tc.want)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// Bad input gets a clear error, a sentinel, and leaks no fd.
func TestAllocBadInput(t *testing.T) {
	testutil.CheckFDs(t)
	long := string(bytes.Repeat([]byte("n"), dmabuf.MaxNameLen+1))
	for _, tc := range []struct {
		name     string
		size     int64
		bufName  string
		sentinel error
	}{
		{"zero size", 0, "x", ErrInvalidSize},
		{"negative size", -4096, "x", ErrInvalidSize},
		{"max int64", math.MaxInt64, "x", ErrInvalidSize},
		{"rounding overflows", math.MaxInt64 - 1, "x", ErrInvalidSize},
		{"name too long", 4096, long, dmabuf.ErrInvalidName},
		{"name with NUL", 4096, "a\x00b", dmabuf.ErrInvalidName},
		{"name with newline", 4096, "a\nb", dmabuf.ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Alloc(tc.size, tc.bufName)
			if !errors.Is(err, tc.sentinel) {
				b.Close()
				t.Fatalf("Alloc(%d, %q) = %v, want %v", tc.size, tc.bufName, err, tc.sentinel)
			}
			t.Logf("error: %v", err)
		})
	}
}

// A memfd would accept any size (pages come when touched); Alloc refuses
// what the machine cannot hold, like a kernel heap, and leaks nothing.
func TestAllocLargerThanRAM(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := Alloc(math.MaxInt64-page+1, "huge")
	if !errors.Is(err, unix.ENOMEM) {
		b.Close()
		t.Fatalf("Alloc(huge) = %v, want ENOMEM", err)
	}
	t.Logf("error: %v", err)
}

func TestAllocDescribesItself(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := Alloc(3*page, "frame-0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if diff := cmp.Diff(dmabuf.KindEmulated, b.Kind()); diff != "" {
		t.Errorf("Kind (-want +got):\n%s", diff)
	}
	if isDMABuf, err := dmabuf.IsDMABuf(b.FD()); err != nil || isDMABuf {
		t.Errorf("IsDMABuf = %v, %v; an emulated buffer must never claim to be a DMA-BUF", isDMABuf, err)
	}
	info, err := b.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if info.Inode == 0 {
		t.Error("Stat().Inode = 0")
	}
	got := info
	got.Inode, got.Pos, got.Flags, got.MntID = 0, 0, 0, 0
	want := dmabuf.Info{Kind: dmabuf.KindEmulated, Size: 3 * page, Exporter: dmabuf.EmulatedExporter, Name: "frame-0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stat (-want +got):\n%s", diff)
	}
	if s := info.String(); !bytes.Contains([]byte(s), []byte(Label)) {
		t.Errorf("Info.String() = %q, does not say %q", s, Label)
	}
	seals, err := unix.FcntlInt(uintptr(b.FD()), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL; seals != want {
		t.Errorf("seals = %#x, want %#x", seals, want)
	}
}

func TestAllocZeroFilled(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := Alloc(64<<10, "zero")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := b.Map(dmabuf.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !bytes.Equal(m.Bytes(), make([]byte, 64<<10)) {
		t.Error("new emulated buffer is not zero-filled")
	}
}

func TestEmulatedHasNoDeviceFeatures(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := Alloc(page, "nodev")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetName("other"); !errors.Is(err, dmabuf.ErrNotSupported) {
		t.Errorf("SetName = %v, want ErrNotSupported", err)
	}
	if f, err := b.ExportSyncFile(dmabuf.Read); !errors.Is(err, dmabuf.ErrNotSupported) {
		f.Close()
		t.Errorf("ExportSyncFile = %v, want ErrNotSupported", err)
	}
	if err := b.ImportSyncFD(dmabuf.Write, 0); !errors.Is(err, dmabuf.ErrNotSupported) {
		t.Errorf("ImportSyncFD = %v, want ErrNotSupported", err)
	}
	// CPU access bracketing is a no-op on coherent CPU memory.
	if err := b.CPUAccess(dmabuf.ReadWrite, func() error { return nil }); err != nil {
		t.Errorf("CPUAccess = %v", err)
	}
}
