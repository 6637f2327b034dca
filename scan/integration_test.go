package scan

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/internal/testutil"
)

const (
	systemHeap   = "/dev/dma_heap/system"
	reservedHeap = "/dev/dma_heap/reserved"
	systemHint   = "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?"
	reservedHint = "kernel built without CONFIG_DMABUF_HEAPS_CMA, or booted without cma=?"
)

// needHeaps skips (fails in the VM tier) unless root can allocate from
// both heaps and read bufinfo.
func needHeaps(t *testing.T) {
	t.Helper()
	testutil.NeedRoot(t)
	testutil.NeedPath(t, systemHeap, systemHint)
	testutil.NeedPath(t, reservedHeap, reservedHint)
	testutil.NeedPath(t, filepath.Join(DefaultDebugFSDir, BufinfoPath), "debugfs not mounted on /sys/kernel/debug, or kernel without CONFIG_DEBUG_FS?")
}

// comm is what the kernel shows as the command of a copy of this binary.
func comm(t *testing.T) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := filepath.Base(self)
	if len(c) > 15 {
		c = c[:15]
	}
	return c
}

func scanNow(t *testing.T) *Snapshot {
	t.Helper()
	s, err := Scan(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func findBuffer(s *Snapshot, ino uint64) *Buffer {
	for i := range s.Buffers {
		if s.Buffers[i].Inode == ino {
			return &s.Buffers[i]
		}
	}
	return nil
}

func findProcess(s *Snapshot, pid int) *Process {
	for i := range s.Processes {
		if s.Processes[i].PID == pid {
			return &s.Processes[i]
		}
	}
	return nil
}

// A child holding and mapping known buffers from system and reserved shows
// with the right sizes, counts, names, exporters and devices; a buffer two
// children share is split between them; once the children exit, all of it
// is gone.
func TestIntegrationHolders(t *testing.T) {
	needHeaps(t)
	testutil.CheckFDs(t)
	vgem := cardOf("vgem") != ""
	if !vgem {
		testutil.Missing(t, "no vgem DRM device: load the vgem module (CONFIG_DRM_VGEM)")
	}

	a := startHolder(t, holdSpec{Buffers: []holdBuffer{
		{Heap: "system", Size: 1 << 20, Name: "scan-sys", FDs: 2, Maps: 1, ImportVgem: true},
		{Heap: "reserved", Size: 2 << 20, Name: "scan-cma", FDs: 1, Maps: 2},
	}})

	// The shared buffer: allocated here, passed to two children, then
	// closed here, so the children are its only holders.
	h, err := dmaheap.Open("system")
	if err != nil {
		t.Fatal(err)
	}
	shared, err := h.Alloc(64 << 10)
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := shared.SetName("scan-shared"); err != nil {
		t.Fatal(err)
	}
	f, err := shared.File()
	if err != nil {
		t.Fatal(err)
	}
	b := startHolder(t, holdSpec{MapInherited: true}, f)
	c := startHolder(t, holdSpec{}, f)
	f.Close()
	shared.Close()

	s := scanNow(t)
	cm := comm(t)
	sys, cma, sh := a.held[0].Inode, a.held[1].Inode, b.held[0].Inode
	if c.held[0].Inode != sh {
		t.Fatalf("the two children report inodes %d and %d for one buffer", sh, c.held[0].Inode)
	}
	want := []Buffer{
		{Inode: sys, Size: 1 << 20, Exporter: "system", Name: "scan-sys", Devices: []string{"vgem"},
			Holders: []Holder{{PID: a.pid(), Comm: cm, FDs: 2, Maps: 1, Mapped: 1 << 20, Share: 1 << 20}}},
		{Inode: cma, Size: 2 << 20, Exporter: "reserved", Name: "scan-cma", Devices: []string{},
			Holders: []Holder{{PID: a.pid(), Comm: cm, FDs: 1, Maps: 2, Mapped: 4 << 20, Share: 2 << 20}}},
		{Inode: sh, Size: 64 << 10, Exporter: "system", Name: "scan-shared", Devices: []string{},
			Holders: []Holder{
				{PID: b.pid(), Comm: cm, FDs: 1, Maps: 1, Mapped: 64 << 10, Share: 32 << 10},
				{PID: c.pid(), Comm: cm, FDs: 1, Share: 32 << 10},
			}},
	}
	slices.SortFunc(want[2].Holders, func(x, y Holder) int { return x.PID - y.PID })
	for _, w := range want {
		got := findBuffer(s, w.Inode)
		if got == nil {
			t.Errorf("buffer %q (inode %d) not found", w.Name, w.Inode)
			continue
		}
		if diff := cmp.Diff(w, *got, cmpopts.IgnoreFields(Buffer{}, "Count")); diff != "" {
			t.Errorf("buffer %q (-want +got):\n%s", w.Name, diff)
		}
		if got.Count < 1 {
			t.Errorf("buffer %q: count %d", w.Name, got.Count)
		}
	}
	for _, w := range []Process{
		{PID: a.pid(), Comm: cm, UID: 0, User: "root", Buffers: 2, FDs: 3, Maps: 3, Mapped: 5 << 20, Bytes: 3 << 20, Share: 3 << 20},
		{PID: b.pid(), Comm: cm, UID: 0, User: "root", Buffers: 1, FDs: 1, Maps: 1, Mapped: 64 << 10, Bytes: 64 << 10, Share: 32 << 10},
		{PID: c.pid(), Comm: cm, UID: 0, User: "root", Buffers: 1, FDs: 1, Bytes: 64 << 10, Share: 32 << 10},
	} {
		got := findProcess(s, w.PID)
		if got == nil {
			t.Errorf("process %d not found", w.PID)
			continue
		}
		if diff := cmp.Diff(w, *got); diff != "" {
			t.Errorf("process %d (-want +got):\n%s", w.PID, diff)
		}
	}
	heaps := map[string]Heap{}
	for _, h := range s.Heaps {
		heaps[h.Name] = h
	}
	if h := heaps["reserved"]; !h.Heap || !h.Contiguous || h.HeapdName != "contiguous" || h.CMATotal <= 0 || h.Bytes < 2<<20 {
		t.Errorf("heap reserved: %+v", h)
	}
	if h := heaps["system"]; !h.Heap || h.Contiguous || h.HeapdName != "system" || h.Bytes < 1<<20+64<<10 || h.Buffers < 2 {
		t.Errorf("heap system: %+v", h)
	}
	if !s.Stats.Bufinfo || s.Stats.Unreadable != 0 {
		t.Errorf("stats %+v: want bufinfo read and nothing unreadable as root", s.Stats)
	}

	a.stop(t)
	b.stop(t)
	c.stop(t)
	s = scanNow(t)
	for _, ino := range []uint64{sys, cma, sh} {
		if got := findBuffer(s, ino); got != nil {
			t.Errorf("inode %d still listed after its holders exited: %+v", ino, *got)
		}
	}
	for _, pid := range []int{a.pid(), b.pid(), c.pid()} {
		if got := findProcess(s, pid); got != nil {
			t.Errorf("exited process %d still listed: %+v", pid, *got)
		}
	}
}

// A buffer a process only has mapped (its fd closed) is still found,
// through maps, with its size from bufinfo.
func TestIntegrationMappedOnly(t *testing.T) {
	needHeaps(t)
	testutil.CheckFDs(t)
	h, err := dmaheap.Open("system")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Alloc(256 << 10)
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.Stat()
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	m, err := b.Map(dmabuf.ProtRead)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	for _, nb := range []bool{false, true} {
		s, err := Scan(context.Background(), &Config{NoBufinfo: nb})
		if err != nil {
			t.Fatal(err)
		}
		got := findBuffer(s, info.Inode)
		if got == nil {
			t.Fatalf("NoBufinfo %v: mapped-only buffer %d not found", nb, info.Inode)
		}
		want := Buffer{Inode: info.Inode, Size: 256 << 10, Exporter: "system",
			Holders: []Holder{{PID: os.Getpid(), Comm: comm(t), Maps: 1, Mapped: 256 << 10, Share: 256 << 10}}}
		if nb {
			want.Exporter, want.SizeEstimated = "", true // known from the mapping alone
		} else {
			want.Devices = []string{}
		}
		if diff := cmp.Diff(want, *got, cmpopts.IgnoreFields(Buffer{}, "Count")); diff != "" {
			t.Errorf("NoBufinfo %v (-want +got):\n%s", nb, diff)
		}
	}
}
