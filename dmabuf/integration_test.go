package dmabuf_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/internal/uapi"
)

const (
	systemHeap = "/dev/dma_heap/system"
	heapHint   = "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?"
	bufinfo    = "/sys/kernel/debug/dma_buf/bufinfo"
	swSync     = "/sys/kernel/debug/sync/sw_sync"
)

// heapAlloc allocates from the system heap directly through uapi (the
// dmaheap package is not a dependency of this one) and wraps the fd.
func heapAlloc(t *testing.T, size uint64) *dmabuf.Buffer {
	t.Helper()
	testutil.NeedPath(t, systemHeap, heapHint)
	hfd, err := unix.Open(systemHeap, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) {
		testutil.Missing(t, fmt.Sprintf("open %s: %v (run as root or join the heap's group)", systemHeap, err))
	}
	if err != nil {
		t.Fatalf("open %s: %v", systemHeap, err)
	}
	defer unix.Close(hfd)
	a := uapi.DMAHeapAllocationData{Len: size, FDFlags: unix.O_RDWR | unix.O_CLOEXEC}
	if err := uapi.DMAHeapAlloc(hfd, &a); err != nil {
		t.Fatalf("allocate %d bytes: %v", size, err)
	}
	b, err := dmabuf.New(int(a.FD))
	if err != nil {
		unix.Close(int(a.FD))
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestIntegrationHeapMapAndSync(t *testing.T) {
	testutil.CheckFDs(t)
	b := heapAlloc(t, 1<<20)
	if ok, err := dmabuf.IsDMABuf(b.FD()); !ok || err != nil {
		t.Fatalf("IsDMABuf = %v, %v", ok, err)
	}
	if b.Kind() != dmabuf.KindKernel || b.Emulated() || b.Size() != 1<<20 {
		t.Fatalf("kind %v size %d", b.Kind(), b.Size())
	}
	m := mapBuf(t, b, dmabuf.ProtReadWrite)
	if !bytes.Equal(m.Bytes(), make([]byte, 1<<20)) {
		t.Error("system heap buffer not zeroed")
	}
	pattern := bytes.Repeat([]byte("heapd!\x00\xff"), (1<<20)/8)
	if err := b.CPUAccess(dmabuf.Write, func() error {
		_, err := m.WriteAt(pattern, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c, err := b.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := mapBuf(t, c, dmabuf.ProtRead)
	got := make([]byte, len(pattern))
	if err := c.CPUAccess(dmabuf.Read, func() error {
		_, err := r.ReadAt(got, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern) {
		t.Error("readback through a second mapping differs")
	}
	for _, dir := range []dmabuf.Direction{dmabuf.Read, dmabuf.Write, dmabuf.ReadWrite} {
		if err := b.BeginCPUAccess(dir); err != nil {
			t.Errorf("BeginCPUAccess(%v): %v", dir, err)
		}
		if err := b.EndCPUAccess(dir); err != nil {
			t.Errorf("EndCPUAccess(%v): %v", dir, err)
		}
	}
}

// The heap rounds up to whole pages and Size reports the real size.
func TestIntegrationHeapSizeRounding(t *testing.T) {
	testutil.CheckFDs(t)
	page := int64(os.Getpagesize())
	b := heapAlloc(t, 5000)
	if want := (5000 + page - 1) / page * page; b.Size() != want {
		t.Errorf("Size = %d, want %d", b.Size(), want)
	}
}

// DMA_BUF_IOCTL_SYNC refuses flags with neither READ nor WRITE, or unknown
// bits; the library refuses them before the kernel sees them.
func TestIntegrationSyncFlags(t *testing.T) {
	testutil.CheckFDs(t)
	b := heapAlloc(t, 4096)
	for _, tc := range []struct {
		flags uint64
		want  error
	}{
		{uapi.DMABufSyncStart, unix.EINVAL},
		{uapi.DMABufSyncEnd, unix.EINVAL},
		{uapi.DMABufSyncRW | 8, unix.EINVAL},
		{uapi.DMABufSyncRead | 1<<63, unix.EINVAL},
		{uapi.DMABufSyncStart | uapi.DMABufSyncRW, nil},
		{uapi.DMABufSyncEnd | uapi.DMABufSyncRW, nil},
		{uapi.DMABufSyncStart | uapi.DMABufSyncRead, nil},
		{uapi.DMABufSyncEnd | uapi.DMABufSyncRead, nil},
	} {
		err := uapi.DMABufIoctlSyncCall(b.FD(), tc.flags)
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("SYNC %#x = %v, want %v", tc.flags, err, tc.want)
		}
	}
	for _, d := range []dmabuf.Direction{0, 4, 8} {
		if err := b.BeginCPUAccess(d); !errors.Is(err, dmabuf.ErrInvalidArgument) {
			t.Errorf("BeginCPUAccess(%v) = %v, want ErrInvalidArgument", d, err)
		}
	}
}

func TestIntegrationSetNameAndStat(t *testing.T) {
	testutil.CheckFDs(t)
	b := heapAlloc(t, 64<<10)
	info, err := b.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if info.Inode == 0 {
		t.Error("Stat().Inode = 0")
	}
	ino := info.Inode
	want := dmabuf.Info{Kind: dmabuf.KindKernel, Size: 64 << 10, Count: 1, Exporter: "system", Inode: ino}
	got := info
	got.Pos, got.Flags, got.MntID = 0, 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stat before SetName (-want +got):\n%s", diff)
	}
	if info.Flags&unix.O_ACCMODE != unix.O_RDWR {
		t.Errorf("fdinfo flags %#o: not O_RDWR", info.Flags)
	}

	const name = "heapd-test-name"
	if err := b.SetName(name); err != nil {
		t.Fatal(err)
	}
	if err := b.SetName(strings.Repeat("x", dmabuf.MaxNameLen+1)); !errors.Is(err, dmabuf.ErrInvalidName) {
		t.Errorf("SetName(32 bytes) = %v, want ErrInvalidName", err)
	}
	m := mapBuf(t, b, dmabuf.ProtRead)
	info, err = b.Stat()
	if err != nil {
		t.Fatal(err)
	}
	want.Name, want.Count = name, 2 // the mapping holds a file reference
	got = info
	got.Pos, got.Flags, got.MntID = 0, 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stat after SetName, while mapped (-want +got):\n%s", diff)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(maps, []byte("/dmabuf:"+name)) {
		t.Errorf("/proc/self/maps has no /dmabuf:%s line", name)
	}
	m.Close()

	testutil.NeedPath(t, bufinfo, "debugfs not mounted at /sys/kernel/debug, or kernel built without CONFIG_DEBUG_FS?")
	data, err := os.ReadFile(bufinfo)
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("read %s: %v (needs root)", bufinfo, err))
	}
	// One line per buffer: size flags mode count exp_name ino name, the
	// numbers zero-padded to 8 digits.
	var line string
	for l := range strings.Lines(string(data)) {
		f := strings.Fields(l)
		if len(f) >= 7 && f[5] == fmt.Sprintf("%08d", ino) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s has no line for inode %d:\n%s", bufinfo, ino, data)
	}
	if f := strings.Fields(line); f[4] != "system" || f[6] != name {
		t.Errorf("%s line %q: want exporter system, name %s", bufinfo, line, name)
	}
}

// pollFD waits up to timeout for events on fd and returns what it saw.
func pollFD(fd int, events int16, timeout time.Duration) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		_, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return fds[0].Revents, err
	}
}

func poll(t *testing.T, fd int, events int16, timeout time.Duration) int16 {
	t.Helper()
	ev, err := pollFD(fd, events, timeout)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return ev
}

// sync_file import and export against a software fence timeline: an
// imported unsignalled write fence holds POLLIN and CPU access back until
// the timeline advances.
func TestIntegrationSyncFile(t *testing.T) {
	testutil.CheckFDs(t)
	b := heapAlloc(t, 4096)
	testutil.NeedPath(t, swSync, "kernel built without CONFIG_SW_SYNC, or debugfs not mounted at /sys/kernel/debug?")

	// An idle buffer exports an already signalled fence.
	idle, err := b.ExportSyncFile(dmabuf.ReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	if ev := poll(t, int(idle.Fd()), unix.POLLIN, 0); ev&unix.POLLIN == 0 {
		t.Errorf("fence exported from an idle buffer not signalled (revents %#x)", ev)
	}
	idle.Close()

	tl, err := unix.Open(swSync, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("open %s: %v (needs root)", swSync, err))
	}
	defer unix.Close(tl) // signals whatever is still pending
	fence, err := uapi.SwSyncCreateFenceCall(tl, 1, "heapd-test")
	if err != nil {
		t.Fatal(err)
	}
	fenceFile := os.NewFile(uintptr(fence), "sw_sync fence")
	defer fenceFile.Close()
	if err := b.ImportSyncFile(dmabuf.Write, fenceFile); err != nil {
		t.Fatal(err)
	}

	if ev := poll(t, b.FD(), unix.POLLIN, 0); ev&unix.POLLIN != 0 {
		t.Fatalf("POLLIN on the buffer before the fence signalled (revents %#x)", ev)
	}
	pending, err := b.ExportSyncFile(dmabuf.Read)
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	if ev := poll(t, int(pending.Fd()), unix.POLLIN, 0); ev&unix.POLLIN != 0 {
		t.Errorf("exported fence signalled before the timeline advanced")
	}

	// CPU access waits for the fence; a Close of another handle for the
	// same buffer does not wait for that blocked call.
	c, err := b.Clone()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	begun := make(chan error, 1)
	go func() { begun <- c.BeginCPUAccess(dmabuf.Read) }()
	polled := make(chan int16, 1)
	go func() {
		ev, err := pollFD(b.FD(), unix.POLLIN, 10*time.Second)
		if err != nil {
			ev = -1
		}
		polled <- ev
	}()
	select {
	case err := <-begun:
		t.Fatalf("BeginCPUAccess returned (%v) before the fence signalled", err)
	case ev := <-polled:
		t.Fatalf("poll returned %#x before the fence signalled", ev)
	case <-time.After(200 * time.Millisecond):
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("Close waited for a BeginCPUAccess blocked on a fence")
	}

	if err := uapi.SwSyncIncCall(tl, 1); err != nil {
		t.Fatal(err)
	}
	if ev := <-polled; ev < 0 || ev&unix.POLLIN == 0 {
		t.Errorf("POLLIN did not come after the fence signalled (revents %#x)", ev)
	}
	select {
	case err := <-begun:
		if err != nil {
			t.Errorf("BeginCPUAccess: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BeginCPUAccess still blocked after the fence signalled")
	}
	if ev := poll(t, int(pending.Fd()), unix.POLLIN, time.Second); ev&unix.POLLIN == 0 {
		t.Errorf("exported fence not signalled after the timeline advanced")
	}
	if err := b.CPUAccess(dmabuf.ReadWrite, func() error { return nil }); err != nil {
		t.Errorf("CPUAccess after the fence: %v", err)
	}
}
