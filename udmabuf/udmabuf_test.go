package udmabuf

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var page = int64(os.Getpagesize())

func memfd(t *testing.T, size int64) *os.File {
	t.Helper()
	f, err := NewMemfd("test", size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// rawMemfd makes a memfd with exactly the given seals (MFD_ALLOW_SEALING
// when allowSealing).
func rawMemfd(t *testing.T, size int64, allowSealing bool, seals int) *os.File {
	t.Helper()
	flags := unix.MFD_CLOEXEC
	if allowSealing {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := unix.MemfdCreate("raw", flags)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "raw")
	t.Cleanup(func() { f.Close() })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestNewMemfd(t *testing.T) {
	testutil.CheckFDs(t)
	for _, tc := range []struct{ size, want int64 }{
		{1, page}, {page, page}, {4*page + 1, 5 * page},
	} {
		f, err := NewMemfd("sizes", tc.size)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil {
			t.Fatal(err)
		}
		type got struct {
			Size  int64
			Seals int
		}
		if diff := cmp.Diff(got{tc.want, unix.F_SEAL_SHRINK}, got{st.Size(), seals}); diff != "" {
			t.Errorf("NewMemfd(%d) (-want +got):\n%s", tc.size, diff)
		}
		f.Close()
	}
	for _, size := range []int64{0, -1, math.MaxInt64} {
		if f, err := NewMemfd("bad", size); !errors.Is(err, ErrInvalidRange) {
			f.Close()
			t.Errorf("NewMemfd(%d) = %v, want ErrInvalidRange", size, err)
		}
	}
}

// The library checks every selftest case (and more) before the ioctl, so
// these run without /dev/udmabuf: a Device that is already closed must
// still report the argument error, and nothing may leak.
func TestValidate(t *testing.T) {
	testutil.CheckFDs(t)
	d := &Device{fd: -1, limits: Limits{MaxSize: 64 << 20, MaxRanges: 4}}
	good := memfd(t, 4*page)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	closed := memfd(t, page)
	closed.Close()
	big := memfd(t, 65<<20)
	for _, tc := range []struct {
		name   string
		ranges []Range
		want   error
	}{
		{"no ranges", nil, ErrInvalidRange},
		{"unaligned offset", []Range{{good, 1, page}}, ErrInvalidRange},
		{"size not a page multiple", []Range{{good, 0, page + 1}}, ErrInvalidRange},
		{"zero size", []Range{{good, 0, 0}}, ErrInvalidRange},
		{"negative size", []Range{{good, 0, -page}}, ErrInvalidRange},
		{"negative offset", []Range{{good, -page, page}}, ErrInvalidRange},
		{"offset+size overflows", []Range{{good, math.MaxInt64 &^ (page - 1), page}}, ErrInvalidRange},
		{"past the memfd's end", []Range{{good, 3 * page, 2 * page}}, ErrInvalidRange},
		{"non-memfd fd", []Range{{r, 0, page}}, ErrBadMemfd},
		{"closed memfd", []Range{{closed, 0, page}}, ErrBadMemfd},
		{"nil memfd", []Range{{nil, 0, page}}, ErrBadMemfd},
		{"memfd without sealing", []Range{{rawMemfd(t, page, false, 0), 0, page}}, ErrBadMemfd},
		{"memfd without F_SEAL_SHRINK", []Range{{rawMemfd(t, page, true, unix.F_SEAL_GROW), 0, page}}, ErrBadMemfd},
		{"memfd with F_SEAL_WRITE", []Range{{rawMemfd(t, page, true, unix.F_SEAL_SHRINK|unix.F_SEAL_WRITE), 0, page}}, ErrBadMemfd},
		{"memfd with F_SEAL_FUTURE_WRITE", []Range{{rawMemfd(t, page, true, unix.F_SEAL_SHRINK|unix.F_SEAL_FUTURE_WRITE), 0, page}}, ErrBadMemfd},
		{"over size limit", []Range{{big, 0, 65 << 20}}, ErrTooLarge},
		{"over size limit in total", []Range{{big, 0, 32 << 20}, {big, 32 << 20, 32<<20 + page}}, ErrTooLarge},
		{"over list limit", []Range{{good, 0, page}, {good, 0, page}, {good, 0, page}, {good, 0, page}, {good, 0, page}}, ErrTooLarge},
		{"valid list reaches the closed device", []Range{{good, 0, page}, {good, 2 * page, 2 * page}}, ErrClosed},
		{"valid at the limit reaches the closed device", []Range{{big, 0, 64 << 20}}, ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := d.CreateList(tc.ranges)
			if !errors.Is(err, tc.want) {
				b.Close()
				t.Fatalf("CreateList = %v, want %v", err, tc.want)
			}
			t.Logf("error: %v", err)
			if len(tc.ranges) == 1 {
				r := tc.ranges[0]
				if _, err := d.CreateFromMemfd(r.Memfd, r.Offset, r.Size); !errors.Is(err, tc.want) {
					t.Errorf("CreateFromMemfd = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

func TestCreateBadSize(t *testing.T) {
	testutil.CheckFDs(t)
	d := &Device{fd: -1, limits: Limits{MaxSize: 64 << 20, MaxRanges: 1024}}
	for _, tc := range []struct {
		size int64
		want error
	}{
		{0, ErrInvalidRange},
		{-1, ErrInvalidRange},
		{math.MaxInt64, ErrInvalidRange},
		{64<<20 + 1, ErrTooLarge}, // rounds up past the limit
		{1, ErrClosed},            // valid: rounded to a page, reaches the device
	} {
		if _, err := d.Create(tc.size); !errors.Is(err, tc.want) {
			t.Errorf("Create(%d) = %v, want %v", tc.size, err, tc.want)
		}
	}
	var nilDev *Device
	if _, err := nilDev.Create(page); !errors.Is(err, ErrClosed) {
		t.Errorf("nil Create = %v", err)
	}
	if _, err := nilDev.CreateList([]Range{{}}); !errors.Is(err, ErrClosed) {
		t.Errorf("nil CreateList = %v", err)
	}
	if err := nilDev.Close(); err != nil {
		t.Errorf("nil Close = %v", err)
	}
	if nilDev.Limits() != (Limits{}) {
		t.Error("nil Limits not zero")
	}
}

// Open either works (then the limits are the kernel's and Close is
// idempotent) or fails with an error that names the node and the fix.
func TestOpen(t *testing.T) {
	testutil.CheckFDs(t)
	d, err := Open()
	if err == nil {
		if got, want := d.Limits(), readLimits(); got != want || got.MaxSize <= 0 {
			t.Errorf("Limits = %+v, want %+v", got, want)
		}
		for range 2 {
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if _, err := d.Create(page); !errors.Is(err, ErrClosed) {
			t.Errorf("Create after Close = %v, want ErrClosed", err)
		}
		return
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Path != DevicePath {
		t.Errorf("Open error %v is not a *os.PathError for %s", err, DevicePath)
	}
	if errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "CONFIG_UDMABUF") {
		t.Errorf("Open error %q does not name the kernel option", err)
	}
	t.Logf("error: %v", err)
}

func TestReadLimitsDefaults(t *testing.T) {
	l := readLimits()
	if l.MaxSize <= 0 || l.MaxRanges <= 0 {
		t.Errorf("readLimits() = %+v", l)
	}
	if _, err := os.Stat(sizeLimitPath); err != nil && l != (Limits{DefaultSizeLimit, DefaultListLimit}) {
		t.Errorf("without %s: %+v, want the defaults", sizeLimitPath, l)
	}
}
