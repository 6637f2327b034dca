package dmaheap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/internal/uapi"
)

// These tests need a kernel with DMA-BUF heaps: they skip with a hint here
// and fail in the VM tier (HEAPD_REQUIRE_DEVICES=1), which boots Linux 6.1
// and 6.12 with cma=64M, vgem and vkms. They follow the kernel's own
// dmabuf-heaps selftest (tools/testing/selftests/dmabuf-heaps) on the system
// heap and on the CMA heap.

const (
	realHeapDir = "/dev/dma_heap"
	mib         = 1 << 20
)

// openReal opens a heap of the running kernel for one test.
func openReal(t *testing.T, name, hint string) *Heap {
	t.Helper()
	testutil.NeedPath(t, filepath.Join(realHeapDir, name), hint)
	h, err := Open(name)
	if errors.Is(err, ErrPermission) {
		testutil.Missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// realCMAName is the CMA heap ResolveCMA picks on the running kernel.
func realCMAName(t *testing.T) string {
	t.Helper()
	testutil.NeedPath(t, realHeapDir, "kernel built without CONFIG_DMABUF_HEAPS?")
	heaps, err := List()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResolveCMA(heaps)
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("no CMA heap (kernel without CONFIG_DMABUF_HEAPS_CMA, or booted without cma=64M?): %v\n%s", err, r))
	}
	return r.Heap.Name
}

// forEachHeap runs f on the system heap and on the CMA heap.
func forEachHeap(t *testing.T, f func(t *testing.T, h *Heap)) {
	t.Run("system", func(t *testing.T) {
		f(t, openReal(t, "system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?"))
	})
	t.Run("cma", func(t *testing.T) {
		f(t, openReal(t, realCMAName(t), "kernel built without CONFIG_DMABUF_HEAPS_CMA, or booted without cma=?"))
	})
}

// fill writes a pattern through a shared mapping inside CPU-access
// brackets, and readBack checks it the same way.
func pattern(i int, seed byte) byte { return byte(i*7) ^ seed }

func fill(t *testing.T, b *dmabuf.Buffer, m *dmabuf.Mapping, seed byte) {
	t.Helper()
	err := b.CPUAccess(dmabuf.Write, func() error {
		data := m.Bytes()
		for i := range data {
			data[i] = pattern(i, seed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readBack(t *testing.T, b *dmabuf.Buffer, m *dmabuf.Mapping, seed byte) {
	t.Helper()
	err := b.CPUAccess(dmabuf.Read, func() error {
		data := m.Bytes()
		for i := range data {
			if data[i] != pattern(i, seed) {
				return fmt.Errorf("byte %d = %#x, want %#x", i, data[i], pattern(i, seed))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openVGEM opens the vgem DRM device (render node preferred), found by
// driver name, never by card number: probe order decides the numbers.
func openVGEM(t *testing.T) int {
	t.Helper()
	var paths []string
	// The sysfs driver link names the driver when the device has one.
	links, _ := filepath.Glob("/sys/class/drm/*/device/driver")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && filepath.Base(target) == "vgem" {
			node := filepath.Base(filepath.Dir(filepath.Dir(l)))
			if strings.HasPrefix(node, "card") || strings.HasPrefix(node, "renderD") {
				paths = append(paths, filepath.Join("/dev/dri", node))
			}
		}
	}
	// vgem's platform device has no driver bound on some kernels: ask every
	// node for its driver name too.
	render, _ := filepath.Glob("/dev/dri/renderD*")
	cards, _ := filepath.Glob("/dev/dri/card*")
	paths = append(paths, render...)
	paths = append(paths, cards...)
	slices.SortStableFunc(paths, func(a, b string) int { // render nodes need no DRM authentication
		return boolCmp(!strings.Contains(a, "renderD"), !strings.Contains(b, "renderD"))
	})
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if name, err := drmDriverName(fd); err == nil && name == "vgem" {
			t.Cleanup(func() { unix.Close(fd) })
			t.Logf("vgem is %s", p)
			return fd
		}
		unix.Close(fd)
	}
	testutil.Missing(t, "no vgem DRM device in /dev/dri: kernel built without CONFIG_DRM_VGEM (or vgem.ko not loaded)?")
	return -1
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// drmDriverName asks a DRM node for its driver name (DRM_IOCTL_VERSION).
func drmDriverName(fd int) (string, error) {
	name := make([]byte, 64)
	v := uapi.DRMVersion{NameLen: uintptr(len(name)), Name: uintptr(unsafe.Pointer(&name[0]))}
	err := uapi.DRMVersionCall(fd, &v)
	runtime.KeepAlive(name)
	if err != nil {
		return "", err
	}
	return string(name[:min(int(v.NameLen), len(name))]), nil
}

func TestIntegrationList(t *testing.T) {
	testutil.CheckFDs(t)
	testutil.NeedPath(t, filepath.Join(realHeapDir, "system"), "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	heaps, err := List()
	if err != nil {
		t.Fatal(err)
	}
	cma := realCMAName(t)
	for _, want := range []struct {
		name    string
		backing Backing
	}{{"system", BackingSystem}, {cma, BackingCMA}} {
		i := slices.IndexFunc(heaps, func(in Info) bool { return in.Name == want.name })
		if i < 0 {
			t.Fatalf("List has no %q: %v", want.name, Names(heaps))
		}
		in := heaps[i]
		t.Logf("%s: %d:%d %s %s:%s (uid %d gid %d) accessible=%v backing=%v (%s)",
			in.Name, in.Major, in.Minor, modeString(in.Mode), in.Owner, in.Group, in.UID, in.GID, in.Accessible, in.Backing, in.BackingWhy)
		if len(in.Problems) > 0 {
			t.Errorf("%s: problems on a real kernel: %q", in.Name, in.Problems)
		}
		if in.Backing != want.backing || in.Alias() || in.Mode&os.ModeCharDevice == 0 {
			t.Errorf("%s: backing %v, alias %v, mode %v; want %v, a character device", in.Name, in.Backing, in.Alias(), in.Mode, want.backing)
		}
		sysDev, err := os.ReadFile(filepath.Join("/sys/class/dma_heap", in.Name, "dev"))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%d:%d", in.Major, in.Minor); got != strings.TrimSpace(string(sysDev)) {
			t.Errorf("%s: device %s, sysfs says %s", in.Name, got, sysDev)
		}
		if os.Geteuid() == 0 && !in.Accessible {
			t.Errorf("%s: not accessible to root", in.Name)
		}
	}
}

// The resolver picks "reserved" on the VM tier's kernels (6.1 and 6.12 with
// cma=64M), default_cma_region from 6.17.
func TestIntegrationResolveCMA(t *testing.T) {
	testutil.CheckFDs(t)
	name := realCMAName(t)
	heaps, err := List()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResolveCMA(heaps)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", r)
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	cmdline, _ := os.ReadFile("/proc/cmdline")
	var want string
	switch {
	case kernelAtLeast(release, 6, 17):
		want = "default_cma_region"
	case cmaArg(string(cmdline)) != "":
		want = "reserved"
	}
	if want != "" && name != want {
		t.Errorf("Linux %s booted with %q: resolver chose %q, want %q", release, cmaArg(string(cmdline)), name, want)
	}
	if !r.Heap.Contiguous() {
		t.Errorf("chose %q, which is not contiguous", name)
	}
}

// kernelAtLeast compares a uname release ("6.1.0-18-amd64") with major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// Selftest: allocate 1 MiB, mmap shared read-write, fill under SYNC, read
// back, and import into vgem.
func TestIntegrationAllocMapImport(t *testing.T) {
	testutil.CheckFDs(t)
	forEachHeap(t, func(t *testing.T, h *Heap) {
		b, err := h.Alloc(mib)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.Size() != mib || b.Kind() != dmabuf.KindKernel {
			t.Fatalf("Alloc(1 MiB) = %d bytes, kind %v", b.Size(), b.Kind())
		}
		if ok, err := dmabuf.IsDMABuf(b.FD()); !ok || err != nil {
			t.Fatalf("IsDMABuf = %v, %v", ok, err)
		}
		flags, err := unix.FcntlInt(uintptr(b.FD()), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.O_ACCMODE != unix.O_RDWR {
			t.Errorf("buffer fd flags %#x, want O_RDWR", flags)
		}
		if fdFlags, _ := unix.FcntlInt(uintptr(b.FD()), unix.F_GETFD, 0); fdFlags&unix.FD_CLOEXEC == 0 {
			t.Error("buffer fd is not close-on-exec")
		}
		m, err := b.Map(dmabuf.ProtReadWrite)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		fill(t, b, m, 0x5a)
		readBack(t, b, m, 0x5a)

		vgem := openVGEM(t)
		handle, err := uapi.DRMPrimeFDToHandleCall(vgem, b.FD())
		if err != nil {
			t.Fatalf("import into vgem: %v", err)
		}
		again, err := uapi.DRMPrimeFDToHandleCall(vgem, b.FD())
		if err != nil || again != handle {
			t.Errorf("second import = %d, %v; want the same handle %d", again, err, handle)
		}
		if err := uapi.DRMGemCloseCall(vgem, handle); err != nil {
			t.Errorf("GEM_CLOSE: %v", err)
		}
		// The buffer is still the CPU's after the device let go.
		readBack(t, b, m, 0x5a)
	})
}

// Selftest: 32 buffers dirtied and freed, then 32 new ones must read zero
// (heaps hand out zeroed memory, never a previous owner's data).
func TestIntegrationAllocZeroed(t *testing.T) {
	testutil.CheckFDs(t)
	forEachHeap(t, func(t *testing.T, h *Heap) {
		for _, size := range []int64{4096, mib} {
			t.Run(fmtSize(size), func(t *testing.T) {
				const n = 32
				for i := range n {
					b, err := h.Alloc(size)
					if err != nil {
						t.Fatalf("dirty buffer %d: %v", i, err)
					}
					m, err := b.Map(dmabuf.ProtReadWrite)
					if err != nil {
						b.Close()
						t.Fatal(err)
					}
					err = b.CPUAccess(dmabuf.Write, func() error {
						data := m.Bytes()
						for j := range data {
							data[j] = 0xff
						}
						return nil
					})
					m.Close()
					b.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
				var bufs []*dmabuf.Buffer
				defer func() {
					for _, b := range bufs {
						b.Close()
					}
				}()
				zero := make([]byte, size)
				for i := range n {
					b, err := h.Alloc(size)
					if err != nil {
						t.Fatalf("fresh buffer %d: %v", i, err)
					}
					bufs = append(bufs, b)
					m, err := b.Map(dmabuf.ProtRead)
					if err != nil {
						t.Fatal(err)
					}
					err = b.CPUAccess(dmabuf.Read, func() error {
						if !bytes.Equal(m.Bytes(), zero) {
							return fmt.Errorf("fresh buffer %d of %s is not zeroed", i, fmtSize(size))
						}
						return nil
					})
					m.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	})
}

// checkRawFD takes an fd from a raw DMA_HEAP_IOCTL_ALLOC, checks its size
// and closes it.
func checkRawFD(t *testing.T, fd uint32, wantSize int64) {
	t.Helper()
	b, err := dmabuf.New(int(fd))
	if err != nil {
		unix.Close(int(fd))
		t.Fatalf("fd from the ioctl: %v", err)
	}
	defer b.Close()
	if b.Size() != wantSize {
		t.Errorf("size %d, want %d", b.Size(), wantSize)
	}
}

// Selftest: the original 16-byte argument and a larger one both work.
func TestIntegrationAllocCompat(t *testing.T) {
	testutil.CheckFDs(t)
	forEachHeap(t, func(t *testing.T, h *Heap) {
		fd, err := h.acquire("test")
		if err != nil {
			t.Fatal(err)
		}
		defer h.release()

		v0 := uapi.DMAHeapAllocationDataV0{Len: mib, FDFlags: allocFDFlags}
		if err := uapi.DMAHeapAllocV0(fd, &v0); err != nil {
			t.Fatalf("16-byte argument: %v", err)
		}
		checkRawFD(t, v0.FD, mib)

		// The kernel ignores what it does not know, garbage included.
		ext := uapi.DMAHeapAllocationDataExt{Len: mib, FDFlags: allocFDFlags, ChargePidFD: 0xffffffff, Pad: 0x88888888}
		if err := uapi.DMAHeapAllocExt(fd, &ext); err != nil {
			t.Fatalf("32-byte argument: %v", err)
		}
		checkRawFD(t, ext.FD, mib)
	})
}

// Selftest: invalid heap_flags and fd_flags fail with EINVAL and return no
// fd; so do a non-zero fd on input, len 0 and a len that wraps when rounded.
func TestIntegrationAllocInvalid(t *testing.T) {
	testutil.CheckFDs(t)
	forEachHeap(t, func(t *testing.T, h *Heap) {
		fd, err := h.acquire("test")
		if err != nil {
			t.Fatal(err)
		}
		defer h.release()
		for _, tc := range []struct {
			name string
			arg  uapi.DMAHeapAllocationData
		}{
			{"heap_flags 1", uapi.DMAHeapAllocationData{Len: mib, FDFlags: allocFDFlags, HeapFlags: 1}},
			{"heap_flags ~0", uapi.DMAHeapAllocationData{Len: mib, FDFlags: allocFDFlags, HeapFlags: ^uint64(0)}},
			{"fd_flags ~(O_RDWR|O_CLOEXEC)", uapi.DMAHeapAllocationData{Len: mib, FDFlags: ^uint32(allocFDFlags)}},
			{"fd_flags O_NONBLOCK", uapi.DMAHeapAllocationData{Len: mib, FDFlags: allocFDFlags | unix.O_NONBLOCK}},
			{"fd on input", uapi.DMAHeapAllocationData{Len: mib, FD: 1, FDFlags: allocFDFlags}},
			{"len 0", uapi.DMAHeapAllocationData{Len: 0, FDFlags: allocFDFlags}},
			{"len wraps", uapi.DMAHeapAllocationData{Len: ^uint64(0), FDFlags: allocFDFlags}},
		} {
			a := tc.arg
			in := a.FD
			err := uapi.DMAHeapAlloc(fd, &a)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("%s: %v, want EINVAL", tc.name, err)
				if err == nil {
					unix.Close(int(a.FD))
				}
			}
			if a.FD != in {
				t.Errorf("%s: fd %d returned on failure", tc.name, a.FD)
			}
		}
	})
}

// len is rounded up to whole pages and the real size comes from the fd;
// sizes the kernel would reject never reach it.
func TestIntegrationAllocSizes(t *testing.T) {
	testutil.CheckFDs(t)
	page := int64(os.Getpagesize())
	forEachHeap(t, func(t *testing.T, h *Heap) {
		for size, want := range map[int64]int64{
			1:    page,
			5000: (5000 + page - 1) / page * page, // 8192 with 4 KiB pages
			page: page,
		} {
			b, err := h.Alloc(size)
			if err != nil {
				t.Fatalf("Alloc(%d): %v", size, err)
			}
			if b.Size() != want {
				t.Errorf("Alloc(%d) is %d bytes, want %d", size, b.Size(), want)
			}
			b.Close()
		}
		for _, size := range []int64{0, -1} {
			if b, err := h.Alloc(size); !errors.Is(err, ErrInvalidSize) || !errors.Is(err, unix.EINVAL) {
				t.Errorf("Alloc(%d) = %v, %v; want ErrInvalidSize", size, b, err)
				b.Close()
			}
		}
	})
}

// Alloc runs concurrently and Close never waits for it.
func TestIntegrationAllocConcurrent(t *testing.T) {
	testutil.CheckFDs(t)
	h := openReal(t, "system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 8 {
				b, err := h.Alloc(64 << 10)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				b.Close()
			}
		})
	}
	wg.Go(func() { h.Close() })
	wg.Wait()
}

func TestIntegrationOpenMissing(t *testing.T) {
	testutil.CheckFDs(t)
	testutil.NeedPath(t, filepath.Join(realHeapDir, "system"), "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	h, err := Open("heapd-no-such-heap")
	if h != nil || !errors.Is(err, ErrNotExist) || !errors.Is(err, os.ErrNotExist) {
		h.Close()
		t.Fatalf("Open(missing) = %v, %v", h, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "heaps present: ") || !strings.Contains(msg, "system") {
		t.Errorf("error does not list the heaps: %v", err)
	}
}

// A user without access to the node gets ErrPermission naming the node,
// its owner, group and mode and the fixes. Run as root, the test
// re-executes itself as nobody.
func TestIntegrationOpenPermission(t *testing.T) {
	testutil.CheckFDs(t)
	node := filepath.Join(realHeapDir, "system")
	testutil.NeedPath(t, node, "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	fi, err := os.Stat(node)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		h, err := Open("system")
		if err == nil {
			h.Close()
			testutil.Missing(t, fmt.Sprintf("this user may open %s (%s); run as root to test the denial as nobody", node, modeString(fi.Mode())))
			return
		}
		if !errors.Is(err, ErrPermission) {
			t.Fatal(err)
		}
		checkPermissionMessage(t, err.Error(), node)
		return
	}
	if fi.Mode().Perm()&0o004 != 0 {
		testutil.Missing(t, fmt.Sprintf("%s is world-readable (%s): nobody is not denied", node, modeString(fi.Mode())))
	}
	rep := openAsNobody(t, nil, "system")
	if rep.Opened || !rep.Permission {
		t.Fatalf("open of %s (%s) as nobody: %+v", node, modeString(fi.Mode()), rep)
	}
	t.Logf("%s", rep.Err)
	checkPermissionMessage(t, rep.Err, node)
}

// Allocate 1 MiB buffers from the CMA heap until it is exhausted: the error
// is ErrNoMemory and reports CmaFree; freeing everything gives CmaFree back.
func TestIntegrationCMAExhaustion(t *testing.T) {
	testutil.CheckFDs(t)
	name := realCMAName(t)
	h := openReal(t, name, "kernel built without CONFIG_DMABUF_HEAPS_CMA?")
	before, err := MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if !before.Present || before.Total == 0 {
		t.Fatalf("CMA heap %q but /proc/meminfo has no CMA: %+v", name, before)
	}
	t.Logf("before: %s", before)

	var bufs []*dmabuf.Buffer
	defer func() {
		for _, b := range bufs {
			b.Close()
		}
	}()
	limit := int(before.Total/mib) + 16
	var allocErr error
	for len(bufs) < limit {
		b, err := h.Alloc(mib)
		if err != nil {
			allocErr = err
			break
		}
		bufs = append(bufs, b)
	}
	if allocErr == nil {
		t.Fatalf("%d allocations of 1 MiB from a %s CMA area never failed", len(bufs), fmtSize(before.Total))
	}
	at, _ := MemInfo()
	t.Logf("exhausted after %d MiB: %s\n%v", len(bufs), at, allocErr)
	if len(bufs) == 0 || int64(len(bufs))*mib > before.Total {
		t.Errorf("got %d MiB from a %s area", len(bufs), fmtSize(before.Total))
	}
	if !errors.Is(allocErr, ErrNoMemory) || !errors.Is(allocErr, unix.ENOMEM) {
		t.Errorf("exhaustion error %v, want ErrNoMemory and ENOMEM", allocErr)
	}
	for _, want := range []string{name, "CMA area", "exhausted or too fragmented", "CmaFree", "CmaTotal", "cma="} {
		if !strings.Contains(allocErr.Error(), want) {
			t.Errorf("exhaustion error does not say %q: %v", want, allocErr)
		}
	}

	for _, b := range bufs {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}
	bufs = nil

	// Freed pages can wait on per-CPU free lists, which CmaFree does not
	// count, and per-CPU counter deltas reach /proc/meminfo about once a
	// second. A CMA allocation drains those lists (alloc_contig_range calls
	// drain_all_pages), so allocate and free one page, then poll. The slack
	// is below one buffer: a single leaked 1 MiB buffer fails the test.
	probe, err := h.Alloc(4096)
	if err != nil {
		t.Fatalf("allocation after freeing everything: %v", err)
	}
	probe.Close()
	const slack = 256 << 10
	var after CMAStats
	for deadline := time.Now().Add(5 * time.Second); ; {
		after, err = MemInfo()
		if err != nil {
			t.Fatal(err)
		}
		if after.Free >= before.Free-slack || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after freeing: %s", after)
	if after.Free < before.Free-slack {
		t.Errorf("CmaFree is %s after freeing everything, was %s before: %s not returned",
			fmtSize(after.Free), fmtSize(before.Free), fmtSize(before.Free-after.Free))
	}
}
