package drm

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/internal/uapi"
)

// Integration tests: they need the VM tier's kernel (vgem, vkms, the system
// and CMA heaps, udmabuf, debugfs) and root. On other machines they skip
// with a hint; with HEAPD_REQUIRE_DEVICES=1 they fail instead.

const bufSize = 1 << 20

// findDevice returns the discovered device whose DRM driver is driver.
func findDevice(t *testing.T, driver, hint string) DeviceInfo {
	t.Helper()
	testutil.NeedRoot(t)
	testutil.NeedPath(t, "/dev/dri", "kernel built without DRM?")
	devs, err := Discover(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Driver == driver {
			return d
		}
	}
	testutil.Missing(t, fmt.Sprintf("no %s device: %s", driver, hint))
	panic("unreachable")
}

func vgemInfo(t *testing.T) DeviceInfo {
	return findDevice(t, "vgem", "kernel built without CONFIG_DRM_VGEM (or module not loaded)?")
}

func vkmsInfo(t *testing.T) DeviceInfo {
	return findDevice(t, "vkms", "kernel built without CONFIG_DRM_VKMS (or module not loaded)?")
}

// openNode opens a node of info and closes it when the test ends.
func openNode(t *testing.T, info DeviceInfo, typ NodeType) *Device {
	t.Helper()
	d, err := info.Open(typ)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// source allocates one kind of DMA-BUF.
type source struct {
	name  string
	alloc func(t *testing.T, size int64) *dmabuf.Buffer
}

func sources() []source {
	return []source{
		{"system", func(t *testing.T, size int64) *dmabuf.Buffer { return heapBuffer(t, "system", size) }},
		{"reserved", func(t *testing.T, size int64) *dmabuf.Buffer { return heapBuffer(t, "reserved", size) }},
		{"udmabuf", udmabufBuffer},
	}
}

// heapBuffer allocates from /dev/dma_heap/<heap> through uapi directly (the
// dmaheap package is not a dependency of drm).
func heapBuffer(t *testing.T, heap string, size int64) *dmabuf.Buffer {
	t.Helper()
	path := "/dev/dma_heap/" + heap
	testutil.NeedPath(t, path, "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM/CMA, or no cma= on the command line?")
	hfd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hfd)
	a := uapi.DMAHeapAllocationData{Len: uint64(size), FDFlags: unix.O_RDWR | unix.O_CLOEXEC}
	if err := uapi.DMAHeapAlloc(hfd, &a); err != nil {
		t.Fatalf("allocate %d bytes from %s: %v", size, path, err)
	}
	return ownBuffer(t, int(a.FD))
}

// udmabufBuffer makes a DMA-BUF from a sealed memfd through /dev/udmabuf.
func udmabufBuffer(t *testing.T, size int64) *dmabuf.Buffer {
	t.Helper()
	testutil.NeedPath(t, "/dev/udmabuf", "kernel built without CONFIG_UDMABUF?")
	mfd, err := unix.MemfdCreate("drm-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := unix.Ftruncate(mfd, size); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		t.Fatal(err)
	}
	dev, err := unix.Open("/dev/udmabuf", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dev)
	fd, err := uapi.UdmabufCreateCall(dev, &uapi.UdmabufCreate{Memfd: uint32(mfd), Flags: uapi.UdmabufFlagsCloexec, Size: uint64(size)})
	if err != nil {
		t.Fatal(err)
	}
	return ownBuffer(t, fd)
}

func ownBuffer(t *testing.T, fd int) *dmabuf.Buffer {
	t.Helper()
	b, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// rawGemClose issues GEM_CLOSE on d's fd behind the handle table's back.
func rawGemClose(d *Device, id uint32) error {
	return d.locked(func(fd int) error { return uapi.DRMGemCloseCall(fd, id) })
}

// requireHandleGone checks that GEM handle id no longer exists on d: the
// table has no reference and the kernel answers GEM_CLOSE with EINVAL.
func requireHandleGone(t *testing.T, d *Device, id uint32) {
	t.Helper()
	if n := d.handleRefs(id); n != 0 {
		t.Errorf("%s: handle %d still has %d references in the table", d, id, n)
	}
	if err := rawGemClose(d, id); !errors.Is(err, unix.EINVAL) {
		t.Errorf("%s: GEM_CLOSE of released handle %d: %v, want EINVAL (handle leaked)", d, id, err)
	}
}

// requireHandleAlive checks that GEM handle id still exists on d, by
// exporting it behind the table's back.
func requireHandleAlive(t *testing.T, d *Device, id uint32) {
	t.Helper()
	err := d.locked(func(fd int) error {
		bfd, err := uapi.DRMPrimeHandleToFDCall(fd, id, unix.O_CLOEXEC)
		if err == nil {
			unix.Close(bfd)
		}
		return err
	})
	if err != nil {
		t.Errorf("%s: handle %d should still be open: %v", d, id, err)
	}
}

// attachments returns the devices attached to buf according to debugfs
// dma_buf/bufinfo: an imported GEM object keeps one attachment per
// importing fd until it is freed.
func attachments(t *testing.T, buf *dmabuf.Buffer) []string {
	t.Helper()
	const bufinfo = "/sys/kernel/debug/dma_buf/bufinfo"
	testutil.NeedPath(t, bufinfo, "debugfs not mounted or CONFIG_DEBUG_FS off?")
	var st unix.Stat_t
	if err := unix.Fstat(buf.FD(), &st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bufinfo)
	if err != nil {
		t.Fatal(err)
	}
	devs, found := parseBufinfoAttachments(data, st.Ino)
	if !found {
		t.Fatalf("buffer inode %d not in %s", st.Ino, bufinfo)
	}
	return devs
}

// parseBufinfoAttachments finds the object with inode ino in bufinfo text
// and returns its attached devices.
func parseBufinfoAttachments(data []byte, ino uint64) (devs []string, found bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	in, inDevs := false, false
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Split(line, "\t"); len(f) >= 7 && !strings.HasPrefix(line, "\t") {
			n, err := strconv.ParseUint(f[5], 10, 64)
			in, inDevs = err == nil && n == ino, false
			found = found || in
			continue
		}
		if !in {
			continue
		}
		switch {
		case line == "\tAttached Devices:":
			inDevs = true
		case strings.HasPrefix(line, "Total "):
			return devs, found
		case inDevs && strings.HasPrefix(line, "\t"):
			devs = append(devs, strings.TrimPrefix(line, "\t"))
		}
	}
	return devs, found
}

// framebuffers counts the framebuffers debugfs lists for a primary node.
func framebuffers(t *testing.T, d *Device) int {
	t.Helper()
	var st unix.Stat_t
	if err := d.locked(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/sys/kernel/debug/dri/%d/framebuffer", unix.Minor(uint64(st.Rdev)))
	testutil.NeedPath(t, path, "debugfs not mounted or CONFIG_DEBUG_FS off?")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("framebuffer["))
}

func TestIntegrationDiscover(t *testing.T) {
	vgem, vkms := vgemInfo(t), vkmsInfo(t)
	t.Logf("vgem: %+v", vgem)
	t.Logf("vkms: %+v", vkms)
	for _, tc := range []struct {
		info             DeviceInfo
		id               string
		kms, render      bool
		modifiers, prime bool
	}{
		{vgem, "platform-vgem", false, true, false, true},
		{vkms, "platform-vkms", true, false, true, true},
	} {
		d := tc.info
		if d.ID != tc.id || d.BusPath != tc.id || d.Subsystem != "platform" {
			t.Errorf("%s: id %q bus path %q subsystem %q, want %q on platform", d.Driver, d.ID, d.BusPath, d.Subsystem, tc.id)
		}
		if d.KMS != tc.kms || d.Display() != tc.kms {
			t.Errorf("%s: KMS %v Display %v, want %v", d.Driver, d.KMS, d.Display(), tc.kms)
		}
		if d.Primary == nil || !strings.HasPrefix(d.Primary.Name, "card") || d.Primary.Major != drmMajor {
			t.Errorf("%s: primary node %+v", d.Driver, d.Primary)
		}
		if (d.Render != nil) != tc.render {
			t.Errorf("%s: render node %+v, want present=%v", d.Driver, d.Render, tc.render)
		}
		if d.QueryError != "" || d.Version == nil || d.Version.Name != d.Driver || d.Caps == nil {
			t.Fatalf("%s: query error %q, version %+v, caps %+v", d.Driver, d.QueryError, d.Version, d.Caps)
		}
		if d.Caps.PrimeImport != tc.prime || d.Caps.PrimeExport != tc.prime || d.Caps.AddFB2Modifiers != tc.modifiers {
			t.Errorf("%s: caps %+v", d.Driver, *d.Caps)
		}
		if d.IOMMU {
			t.Errorf("%s: reported behind an IOMMU", d.Driver)
		}
	}
	var names []string
	for _, c := range vkms.Connectors {
		names = append(names, c.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "Virtual-1") {
		t.Errorf("vkms connectors %v, want Virtual-1", names)
	}
}

func TestIntegrationOpen(t *testing.T) {
	testutil.CheckFDs(t)
	vgem, vkms := vgemInfo(t), vkmsInfo(t)
	for _, tc := range []struct {
		info DeviceInfo
		typ  NodeType
	}{{vgem, NodeRender}, {vgem, NodePrimary}, {vkms, NodePrimary}} {
		d := openNode(t, tc.info, tc.typ)
		if d.NodeType() != tc.typ || d.Driver() != tc.info.Driver {
			t.Errorf("%s: node type %v driver %q, want %v %q", d.Path(), d.NodeType(), d.Driver(), tc.typ, tc.info.Driver)
		}
		if tc.typ == NodePrimary {
			// Open dropped the master the kernel gave it: dropping again
			// is EINVAL ("not master").
			err := d.locked(func(fd int) error { return uapi.DRMDropMasterCall(fd) })
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("%s: DROP_MASTER after Open: %v, want EINVAL (still master?)", d, err)
			}
		}
	}
	// vgem's DUMB_BUFFER answer is an error, read as false.
	if c := openNode(t, vgem, NodeRender).Caps(); c.DumbBuffer || !c.PrimeImport {
		t.Errorf("vgem caps %+v", c)
	}
	for _, path := range []string{"/dev/udmabuf", "/dev/dma_heap/system", "/dev/null"} {
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if d, err := Open(path); !errors.Is(err, ErrNotDRM) {
			d.Close()
			t.Errorf("Open(%s): %v, want ErrNotDRM", path, err)
		}
	}
}

// Every source imports into vgem (both nodes) and vkms; importing twice
// gives one GEM handle that closes with its last reference, in either order.
func TestIntegrationImportTwice(t *testing.T) {
	testutil.CheckFDs(t)
	vgem, vkms := vgemInfo(t), vkmsInfo(t)
	targets := []*Device{openNode(t, vgem, NodeRender), openNode(t, vgem, NodePrimary), openNode(t, vkms, NodePrimary)}
	for _, src := range sources() {
		for _, d := range targets {
			for _, firstFirst := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s-%v/first-closed-first=%v", src.name, d.Driver(), d.NodeType(), firstFirst), func(t *testing.T) {
					buf := src.alloc(t, bufSize)
					if got := attachments(t, buf); len(got) != 0 {
						t.Fatalf("fresh buffer attached to %v", got)
					}
					a, err := d.Import(buf)
					if err != nil {
						t.Fatal(err)
					}
					b, err := d.Import(buf)
					if err != nil {
						a.Close()
						t.Fatal(err)
					}
					if a.ID() == 0 || a.ID() != b.ID() || d.handleRefs(a.ID()) != 2 {
						t.Fatalf("handles %d and %d, %d refs; want one handle with 2 refs", a.ID(), b.ID(), d.handleRefs(a.ID()))
					}
					if got := attachments(t, buf); len(got) != 1 {
						t.Errorf("attached to %v, want one device", got)
					}
					first, second := a, b
					if !firstFirst {
						first, second = b, a
					}
					if err := first.Close(); err != nil {
						t.Fatal(err)
					}
					requireHandleAlive(t, d, a.ID())
					if err := second.Close(); err != nil {
						t.Fatal(err)
					}
					requireHandleGone(t, d, a.ID())
					if got := attachments(t, buf); len(got) != 0 {
						t.Errorf("still attached to %v after the last Close", got)
					}
				})
			}
		}
	}
}

// Concurrent imports and closes of one buffer on one device leave nothing.
func TestIntegrationImportConcurrent(t *testing.T) {
	vgem := vgemInfo(t)
	d := openNode(t, vgem, NodeRender)
	buf := heapBuffer(t, "system", bufSize)
	var wg sync.WaitGroup
	ids := make(chan uint32, 64)
	for range 8 {
		wg.Go(func() {
			for range 8 {
				h, err := d.Import(buf)
				if err != nil {
					t.Error(err)
					return
				}
				ids <- h.ID()
				if err := h.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[uint32]bool{}
	for id := range ids {
		seen[id] = true
	}
	for id := range seen {
		requireHandleGone(t, d, id)
	}
	if got := attachments(t, buf); len(got) != 0 {
		t.Errorf("still attached to %v", got)
	}
}

// The probe passes for every source on vkms and leaves neither a
// framebuffer nor a handle nor an attachment behind.
func TestIntegrationProbe(t *testing.T) {
	testutil.CheckFDs(t)
	vkms := openNode(t, vkmsInfo(t), NodePrimary)
	for _, src := range sources() {
		t.Run(src.name, func(t *testing.T) {
			buf := src.alloc(t, bufSize)
			fbs := framebuffers(t, vkms)
			res, err := Probe(vkms, buf, Layout{})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			want := DefaultLayout(bufSize)
			if !res.OK || res.FailedStep != "" || res.Errno != 0 || res.Layout != want || res.Driver != "vkms" {
				t.Errorf("Probe = %+v, want OK with %+v", res, want)
			}
			if n := framebuffers(t, vkms); n != fbs {
				t.Errorf("%d framebuffers after the probe, %d before", n, fbs)
			}
			if got := attachments(t, buf); len(got) != 0 {
				t.Errorf("buffer still attached to %v", got)
			}
			if n := vkms.handleCount(); n != 0 {
				t.Errorf("%d handles left in the table", n)
			}
		})
	}
}

// A layout the display refuses fails at addfb2 with EINVAL, and the import
// is released all the same.
func TestIntegrationProbeRefused(t *testing.T) {
	testutil.CheckFDs(t)
	vkms := openNode(t, vkmsInfo(t), NodePrimary)
	buf := heapBuffer(t, "system", bufSize)
	fbs := framebuffers(t, vkms)
	for _, tc := range []struct {
		name string
		l    Layout
	}{
		{"pitch shorter than a row", Layout{Width: 64, Height: 64, Pitch: 16}},
		{"wider than vkms allows", Layout{Width: 16384, Height: 16, Pitch: 65536}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Probe(vkms, buf, tc.l)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if res.OK || res.FailedStep != StepAddFB2 || res.Errno != unix.EINVAL || !errors.Is(res.Err, unix.EINVAL) || res.Hint == "" {
				t.Errorf("Probe = %+v, want a refusal at addfb2 with EINVAL", res)
			}
		})
	}
	// A tiled modifier no plane lists: Linux 6.12's ADDFB2 refuses it, 6.1's
	// accepts it (it does not check planes) and the probe's plane step
	// refuses it instead.
	res, err := Probe(vkms, buf, Layout{Width: 64, Height: 64, Modifier: modTTiled})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	atPlane := res.FailedStep == StepPlane && res.Errno == 0 && errors.Is(res.Err, ErrNotSupported)
	atAddFB2 := res.FailedStep == StepAddFB2 && res.Errno == unix.EINVAL
	if res.OK || !(atPlane || atAddFB2) || res.Hint == "" {
		t.Errorf("Probe with a tiled modifier = %+v, want a refusal at the plane or addfb2 step", res)
	}
	if n := framebuffers(t, vkms); n != fbs {
		t.Errorf("%d framebuffers after the probes, %d before", n, fbs)
	}
	if got := attachments(t, buf); len(got) != 0 {
		t.Errorf("buffer still attached to %v", got)
	}
	// Layouts that cannot fit the buffer are the caller's error, not a probe.
	if _, err := Probe(vkms, buf, Layout{Width: 4096, Height: 4096}); !errors.Is(err, ErrBadLayout) {
		t.Errorf("oversized layout: %v, want ErrBadLayout", err)
	}
}

// A buffer the caller has imported keeps its handle through a probe.
func TestIntegrationProbeKeepsCallerHandle(t *testing.T) {
	vkms := openNode(t, vkmsInfo(t), NodePrimary)
	buf := heapBuffer(t, "system", bufSize)
	h, err := vkms.Import(buf)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Probe(vkms, buf, Layout{})
	if err != nil || !res.OK {
		t.Fatalf("Probe = %+v, %v", res, err)
	}
	requireHandleAlive(t, vkms, h.ID())
	fb, err := vkms.AddFB2(h, DefaultLayout(bufSize))
	if err != nil {
		t.Fatalf("AddFB2 on the caller's handle after a probe: %v", err)
	}
	if err := fb.Close(); err != nil {
		t.Error(err)
	}
	if err := h.Close(); err != nil {
		t.Error(err)
	}
	requireHandleGone(t, vkms, h.ID())
}

// Dumb buffers: create and map on vkms, export, import into vgem, and read
// the pattern back through vgem's export. vgem creates dumb buffers on its
// primary node although GET_CAP(DUMB_BUFFER) says otherwise.
func TestIntegrationDumb(t *testing.T) {
	testutil.CheckFDs(t)
	vgemInfo, vkmsInfo := vgemInfo(t), vkmsInfo(t)
	vkms := openNode(t, vkmsInfo, NodePrimary)
	vgem := openNode(t, vgemInfo, NodeRender)

	db, err := vkms.CreateDumb(64, 64, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Pitch < 256 || db.Size < 64*uint64(db.Pitch) {
		t.Errorf("dumb 64x64@32: pitch %d size %d", db.Pitch, db.Size)
	}
	m, err := db.Map()
	if err != nil {
		t.Fatal(err)
	}
	pattern := make([]byte, db.Size)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>8)
	}
	copy(m.Bytes(), pattern)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	exported, err := db.Export()
	if err != nil {
		t.Fatal(err)
	}
	defer exported.Close()
	if exported.Size() < int64(db.Size) {
		t.Errorf("exported %d bytes of a %d-byte dumb buffer", exported.Size(), db.Size)
	}
	// The display's own dumb buffer passes its probe (a self-import).
	if res, err := Probe(vkms, exported, Layout{Width: 64, Height: 64, Pitch: db.Pitch}); err != nil || !res.OK {
		t.Errorf("Probe of vkms's own dumb buffer = %+v, %v", res, err)
	}

	h, err := vgem.Import(exported)
	if err != nil {
		t.Fatal(err)
	}
	back, err := vgem.Export(h)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	id := h.ID()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	requireHandleGone(t, vgem, id)
	bm, err := back.Map(dmabuf.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(pattern))
	if _, err := bm.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	bm.Close()
	if !bytes.Equal(got, pattern) {
		t.Errorf("pattern written through vkms's dumb mapping did not come back through vgem")
	}

	dumbID := db.Handle().ID()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	requireHandleGone(t, vkms, dumbID)

	// vgem: no DUMB_BUFFER capability, yet CREATE_DUMB works on card*.
	vgemCard := openNode(t, vgemInfo, NodePrimary)
	if vgemCard.Caps().DumbBuffer {
		t.Log("vgem now answers GET_CAP(DUMB_BUFFER)")
	}
	vdb, err := vgemCard.CreateDumb(32, 32, 32)
	if err != nil {
		t.Fatalf("CreateDumb on vgem's primary node: %v", err)
	}
	if err := vdb.Close(); err != nil {
		t.Error(err)
	}
}

func TestIntegrationAllocateDumb(t *testing.T) {
	testutil.CheckFDs(t)
	vkms := openNode(t, vkmsInfo(t), NodePrimary)
	vgem := openNode(t, vgemInfo(t), NodeRender)
	for _, size := range []int64{1, 4096, 5000, bufSize} {
		buf, err := AllocateDumb(vkms, size)
		if err != nil {
			t.Fatalf("AllocateDumb(%d): %v", size, err)
		}
		if buf.Size() < size || buf.Size()%4096 != 0 || buf.Emulated() {
			t.Errorf("AllocateDumb(%d): %d bytes, kind %v", size, buf.Size(), buf.Kind())
		}
		if vkms.handleCount() != 0 {
			t.Errorf("AllocateDumb(%d) left %d handles", size, vkms.handleCount())
		}
		h, err := vgem.Import(buf)
		if err != nil {
			t.Errorf("import of a vkms dumb buffer into vgem: %v", err)
		}
		h.Close()
		buf.Close()
	}
	if _, err := AllocateDumb(vkms, 0); !errors.Is(err, ErrBadLayout) {
		t.Errorf("AllocateDumb(0): %v", err)
	}
}

func TestIntegrationKMS(t *testing.T) {
	testutil.CheckFDs(t)
	vkms := openNode(t, vkmsInfo(t), NodePrimary)
	res, err := vkms.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.CRTCs) == 0 || len(res.Connectors) == 0 || len(res.Encoders) == 0 || res.MaxWidth < 4096 || res.MinWidth == 0 {
		t.Errorf("vkms resources %+v", res)
	}
	planes, err := vkms.Planes()
	if err != nil {
		t.Fatal(err)
	}
	types := map[PlaneType]int{}
	for _, p := range planes {
		types[p.Type]++
		t.Logf("plane %d %v formats %v modifiers %v", p.ID, p.Type, p.Formats, p.Modifiers)
		if p.Modifiers == nil {
			t.Errorf("plane %d has no IN_FORMATS", p.ID)
			continue
		}
		for _, f := range p.Formats {
			if _, ok := p.Modifiers[f]; !ok {
				t.Errorf("plane %d: format %v missing from IN_FORMATS", p.ID, f)
			}
		}
		if p.PossibleCRTCs == 0 {
			t.Errorf("plane %d can use no CRTC", p.ID)
		}
	}
	if types[PlanePrimary] == 0 {
		t.Fatalf("no primary plane among %d planes (universal planes off?)", len(planes))
	}
	for _, p := range planes {
		if p.Type == PlanePrimary && !p.Supports(FormatXRGB8888, ModLinear) {
			t.Errorf("primary plane %d does not take XRGB8888 LINEAR", p.ID)
		}
	}
	// The raw IN_FORMATS blob of the primary plane, for testdata/informats.
	vkms.locked(func(fd int) error {
		for _, p := range planes {
			if p.Type != PlanePrimary {
				continue
			}
			ids, vals, err := uapi.DRMModeObjGetPropertyList(fd, p.ID, uapi.DRMModeObjectPlane)
			if err != nil {
				return err
			}
			for i, id := range ids {
				if name, _ := vkms.propNameLocked(fd, id); name == "IN_FORMATS" {
					blob, err := uapi.DRMModeGetPropBlobData(fd, uint32(vals[i]))
					if err == nil {
						t.Logf("primary plane IN_FORMATS blob: %s", hex.EncodeToString(blob))
					}
				}
			}
		}
		return nil
	})
}

// Operations on the wrong kind of device or node fail early and say why.
func TestIntegrationWrongDevice(t *testing.T) {
	testutil.CheckFDs(t)
	vgemInfo, vkmsInfo := vgemInfo(t), vkmsInfo(t)
	vgemRender := openNode(t, vgemInfo, NodeRender)
	vgemCard := openNode(t, vgemInfo, NodePrimary)
	vkms := openNode(t, vkmsInfo, NodePrimary)
	buf := heapBuffer(t, "system", bufSize)

	// KMS on vgem: render-only.
	for name, call := range map[string]func() error{
		"Resources": func() error { _, err := vgemCard.Resources(); return err },
		"Planes":    func() error { _, err := vgemCard.Planes(); return err },
		"Probe":     func() error { _, err := Probe(vgemCard, buf, Layout{}); return err },
	} {
		err := call()
		if !errors.Is(err, ErrNoKMS) || !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s on vgem: %v, want ErrNoKMS", name, err)
		}
		t.Logf("%s on vgem: %v", name, err)
	}
	if kms, err := vgemCard.HasKMS(); err != nil || kms {
		t.Errorf("vgem HasKMS = %v, %v", kms, err)
	}
	// Dumb buffers and KMS need the primary node.
	for name, call := range map[string]func() error{
		"CreateDumb": func() error { _, err := vgemRender.CreateDumb(64, 64, 32); return err },
		"Probe":      func() error { _, err := Probe(vgemRender, buf, Layout{}); return err },
	} {
		if err := call(); !errors.Is(err, ErrNeedPrimary) {
			t.Errorf("%s on vgem's render node: %v, want ErrNeedPrimary", name, err)
		} else {
			t.Logf("%s on vgem's render node: %v", name, err)
		}
	}
	// A handle of one device is refused by another.
	h, err := vgemRender.Import(buf)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := vkms.AddFB2(h, DefaultLayout(bufSize)); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("AddFB2 with a vgem handle on vkms: %v, want ErrWrongDevice", err)
	}
	if _, err := vkms.Export(h); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("Export of a vgem handle from vkms: %v, want ErrWrongDevice", err)
	}
	// Fds that are not DMA-BUFs are refused by the import with a clear error.
	vgemRender.locked(func(fd int) error {
		if _, err := vkms.ImportFD(fd); !errors.Is(err, dmabuf.ErrNotDMABuf) {
			t.Errorf("ImportFD of a DRM device fd: %v, want ErrNotDMABuf", err)
		} else {
			t.Logf("ImportFD of a DRM device fd: %v", err)
		}
		return nil
	})
	// An emulated buffer is not importable.
	if _, err := vgemRender.Import(emulatedBuffer(t, 4096)); !errors.Is(err, ErrEmulated) {
		t.Errorf("Import of an emulated buffer: %v", err)
	}
}
