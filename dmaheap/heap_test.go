package dmaheap

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

func TestOpenTree(t *testing.T) {
	testutil.CheckFDs(t)
	cfg := loadTree(t, "rpi4")
	for name, backing := range map[string]Backing{
		"system":        BackingSystem,
		"linux,cma":     BackingCMA,
		"vidbuf_cached": BackingCMA,
	} {
		h, err := cfg.Open(name)
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		if h.Name() != name || h.Path() != filepath.Join(cfg.DevDir, "dma_heap", name) || h.Backing() != backing {
			t.Errorf("Open(%q) = %s at %s, %v; want backing %v", name, h, h.Path(), h.Backing(), backing)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if err := h.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

// Bad sizes never reach the kernel: on a regular file an ioctl would fail
// with ENOTTY, so an EINVAL-only error proves no ioctl was made.
func TestAllocInvalidSize(t *testing.T) {
	testutil.CheckFDs(t)
	h, err := loadTree(t, "linux-6.1").Open("system")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The address space is math.MaxInt: 2^63-1 on 64-bit, 2^31-1 on arm.
	largest := int64(math.MaxInt) - int64(os.Getpagesize()) + 1
	for _, size := range []int64{0, -1, math.MinInt64, math.MaxInt64, largest + 1} {
		b, err := h.Alloc(size)
		if b != nil || !errors.Is(err, ErrInvalidSize) || !errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			t.Errorf("Alloc(%d) = %v, %v; want ErrInvalidSize without an ioctl", size, b, err)
			b.Close()
		}
	}
	// The largest size that rounds up reaches the "kernel" (ENOTTY here).
	if _, err := h.Alloc(largest); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("Alloc(largest) = %v, want ENOTTY from the ioctl", err)
	}
}

func TestAllocNotAHeap(t *testing.T) {
	testutil.CheckFDs(t)
	h, err := loadTree(t, "linux-6.1").Open("reserved")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = h.Alloc(4096)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, unix.ENOTTY) || !strings.Contains(err.Error(), "not a DMA-BUF heap node") {
		t.Fatalf("Alloc on a regular file = %v", err)
	}
	if e.Op != "alloc" || e.Heap != "reserved" {
		t.Errorf("Error = %+v", e)
	}
}

func TestHeapNilAndClosed(t *testing.T) {
	var h *Heap
	if err := h.Close(); err != nil {
		t.Fatalf("nil Close: %v", err)
	}
	if h.Name() != "" || h.Path() != "" || h.Backing() != BackingUnknown || h.Contiguous() {
		t.Error("nil Heap accessors")
	}
	if _, err := h.Alloc(4096); !errors.Is(err, ErrClosed) || !errors.Is(err, fs.ErrClosed) {
		t.Errorf("nil Alloc = %v, want ErrClosed", err)
	}

	testutil.CheckFDs(t)
	h, err := loadTree(t, "linux-6.1").Open("system")
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := h.Alloc(4096); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), `"system"`) {
		t.Errorf("Alloc after Close = %v, want ErrClosed naming the heap", err)
	}
}

// Close never waits for Alloc and the fd is closed exactly once, by whoever
// is last (run with -race).
func TestHeapConcurrentClose(t *testing.T) {
	testutil.CheckFDs(t)
	cfg := loadTree(t, "linux-6.1")
	for range 20 {
		h, err := cfg.Open("system")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 10 {
					_, err := h.Alloc(4096)
					if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, ErrClosed) {
						t.Errorf("Alloc = %v", err)
					}
				}
			})
		}
		wg.Go(func() { h.Close() })
		wg.Wait()
		h.Close()
	}
}

func TestOpenMissing(t *testing.T) {
	testutil.CheckFDs(t)
	for _, tc := range []struct {
		tree, name string
		want       []string
	}{
		{"linux-6.17", "reserved-typo", []string{"heaps present: default_cma_region, reserved, system", "needs the driver"}},
		{"linux-6.1", "default_cma_region", []string{"heaps present: reserved, system", "CONFIG_DMABUF_HEAPS_CMA", `calls its CMA heap "reserved"`, "ResolveCMA"}},
		{"linux-6.19", "reserved", []string{`calls its CMA heap "default_cma_region"`, "CONFIG_DMABUF_HEAPS_CMA_LEGACY"}},
		{"vendor", "system-uncached", []string{"CONFIG_DMABUF_HEAPS_SYSTEM"}},
		{"rpi5", "default-pool", []string{"vidbuf_cached -> system", `calls its CMA heap "linux,cma"`}},
		{"linux-6.1", "vidbuf_cached", []string{"Raspberry Pi OS"}},
		{"", "system", []string{"no DMA-BUF heaps at all", "CONFIG_DMABUF_HEAPS"}},
	} {
		var cfg *Config
		if tc.tree == "" {
			cfg = treeConfig(t.TempDir())
		} else {
			cfg = loadTree(t, tc.tree)
		}
		h, err := cfg.Open(tc.name)
		if h != nil || !errors.Is(err, ErrNotExist) || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, unix.ENOENT) {
			t.Errorf("%s: Open(%q) = %v, %v; want ErrNotExist", tc.tree, tc.name, h, err)
			h.Close()
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: Open(%q) error does not say %q:\n%v", tc.tree, tc.name, w, err)
			}
		}
	}
}

func TestOpenBadName(t *testing.T) {
	cfg := loadTree(t, "linux-6.1")
	for _, name := range []string{"", ".", "..", "../dma_heap/system", "sys\x00tem", "a/b"} {
		if h, err := cfg.Open(name); !errors.Is(err, ErrNotExist) {
			t.Errorf("Open(%q) = %v, %v; want ErrNotExist", name, h, err)
			h.Close()
		}
	}
}

func TestOpenNotADevice(t *testing.T) {
	testutil.CheckFDs(t)
	cfg := loadTree(t, "linux-6.1")
	cfg.AllowRegularNodes = false
	h, err := cfg.Open("system")
	if h != nil || !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), "not a character device") {
		t.Fatalf("Open(regular file) = %v, %v", h, err)
	}
}

func TestOpenErrorKinds(t *testing.T) {
	cfg := loadTree(t, "linux-6.1")
	path := filepath.Join(cfg.DevDir, "dma_heap", "system")
	err := cfg.openError("system", path, &os.PathError{Op: "open", Path: path, Err: unix.EACCES})
	if !errors.Is(err, ErrPermission) || !errors.Is(err, fs.ErrPermission) || !errors.Is(err, unix.EACCES) {
		t.Errorf("EACCES: %v", err)
	}
	err = cfg.openError("system", path, &os.PathError{Op: "open", Path: path, Err: unix.ENXIO})
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrNotExist) || !errors.Is(err, unix.ENXIO) {
		t.Errorf("ENXIO: %v", err)
	}
}

func TestPermissionDetail(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file another group")
	}
	path := filepath.Join(t.TempDir(), "system")
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 0, 44); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	got := permissionDetail("system", path)
	group := lookupGroup(44)
	if group == "" {
		group = "44"
	}
	for _, want := range []string{
		path + " is root:" + group + " -rw-r-----",
		`add the user to group "` + group + `"`,
		`SUBSYSTEM=="dma_heap", KERNEL=="system", GROUP="video", MODE="0660"`,
		"heapd daemon",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("permissionDetail does not say %q:\n%s", want, got)
		}
	}
	// root's group is no fix to offer.
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := permissionDetail("system", path); strings.Contains(got, "add the user to group") {
		t.Errorf("permissionDetail offers group root:\n%s", got)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[fs.FileMode]string{
		fs.ModeDevice | fs.ModeCharDevice | 0o660: "crw-rw----",
		fs.ModeDevice | 0o600:                     "brw-------",
		0o644:                                     "-rw-r--r--",
		fs.ModeDir | 0o755:                        "drwxr-xr-x",
	} {
		if got := modeString(m); got != want {
			t.Errorf("modeString(%v) = %q, want %q", m, got, want)
		}
	}
}

func TestFmtSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 bytes", 5000: "5000 bytes", 8192: "8 KiB", 1 << 20: "1 MiB",
		3<<20 + 1<<19: "3.5 MiB", 64 << 30: "64 GiB",
	} {
		if got := fmtSize(n); got != want {
			t.Errorf("fmtSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
