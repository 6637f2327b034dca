package drm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
)

// Integration tests of mode setting on vkms (VM tier): master, topology,
// blobs, atomic commits, flip events and a writeback capture, through the
// drm package alone. internal/compositor builds the same flow for users.

// openMaster opens vkms's primary node as DRM master, with atomic and
// writeback enabled, and closes it when the test ends.
func openMaster(t *testing.T) *Device {
	t.Helper()
	info := vkmsInfo(t)
	d, err := OpenMaster(info.Primary.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.EnableWriteback(); err != nil {
		t.Fatal(err)
	}
	return d
}

// vkmsPipeline is vkms's display path: the virtual and writeback
// connectors, the CRTC and its primary plane, with their properties.
type vkmsPipeline struct {
	virtual, writeback        ConnectorInfo
	crtc, plane               uint32
	connP, wbP, crtcP, planeP *Properties
}

func pipeline(t *testing.T, d *Device) vkmsPipeline {
	t.Helper()
	var p vkmsPipeline
	conns, err := d.Connectors()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		switch c.Type {
		case ConnectorVirtual:
			p.virtual = c
		case ConnectorWriteback:
			p.writeback = c
		}
	}
	if p.virtual.ID == 0 || p.writeback.ID == 0 {
		t.Fatalf("connectors %+v: want Virtual-1 and Writeback-1 (vkms loaded without enable_writeback=1?)", conns)
	}
	res, err := d.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.CRTCs) != 1 {
		t.Fatalf("vkms has CRTCs %v, want one", res.CRTCs)
	}
	p.crtc = res.CRTCs[0]
	planes, err := d.Planes()
	if err != nil {
		t.Fatal(err)
	}
	for _, pl := range planes {
		if pl.Type == PlanePrimary && pl.PossibleCRTCs&1 != 0 {
			p.plane = pl.ID
		}
	}
	if p.plane == 0 {
		t.Fatalf("no primary plane among %+v", planes)
	}
	props := func(id uint32, typ ObjectType) *Properties {
		pr, err := d.Properties(id, typ)
		if err != nil {
			t.Fatal(err)
		}
		return pr
	}
	p.connP = props(p.virtual.ID, ObjectConnector)
	p.wbP = props(p.writeback.ID, ObjectConnector)
	p.crtcP = props(p.crtc, ObjectCRTC)
	p.planeP = props(p.plane, ObjectPlane)
	return p
}

// fillXRGB writes a pattern whose X byte is x into buf, CPU access
// bracketed.
func fillXRGB(t *testing.T, buf *dmabuf.Buffer, w, h int, x byte) []byte {
	t.Helper()
	want := make([]byte, w*h*4)
	for y := range h {
		for i := range w {
			px := uint32(x)<<24 | uint32(i*255/w)<<16 | uint32(y*255/h)<<8 | uint32((i^y)&0xff)
			binary.LittleEndian.PutUint32(want[(y*w+i)*4:], px)
		}
	}
	m, err := buf.Map(dmabuf.ProtReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := buf.CPUAccess(dmabuf.Write, func() error { copy(m.Bytes(), want); return nil }); err != nil {
		t.Fatal(err)
	}
	return want
}

func readBuffer(t *testing.T, buf *dmabuf.Buffer, n int) []byte {
	t.Helper()
	m, err := buf.Map(dmabuf.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make([]byte, n)
	if err := buf.CPUAccess(dmabuf.Read, func() error { copy(got, m.Bytes()); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestIntegrationAtomicMaster(t *testing.T) {
	testutil.CheckFDs(t)
	info := vkmsInfo(t)
	a, err := OpenMaster(info.Primary.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if m, err := a.IsMaster(); err != nil || !m {
		t.Fatalf("IsMaster after OpenMaster = %v, %v", m, err)
	}
	if b, err := OpenMaster(info.Primary.Path); !errors.Is(err, unix.EBUSY) {
		b.Close()
		t.Fatalf("second OpenMaster while the first holds master: %v, want EBUSY", err)
	}
	plain := openNode(t, info, NodePrimary)
	if m, err := plain.IsMaster(); err != nil || m {
		t.Errorf("IsMaster of a plain Open = %v, %v; want false", m, err)
	}
	if err := a.DropMaster(); err != nil {
		t.Fatal(err)
	}
	if err := a.DropMaster(); err != nil {
		t.Errorf("second DropMaster: %v, want nil (a no-op)", err)
	}
	if m, err := a.IsMaster(); err != nil || m {
		t.Errorf("IsMaster after DropMaster = %v, %v", m, err)
	}
	b, err := OpenMaster(info.Primary.Path)
	if err != nil {
		t.Fatalf("OpenMaster after the first dropped master: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Close released master: the first fd (which was master) takes it back.
	if err := a.SetMaster(); err != nil {
		t.Errorf("SetMaster after the other master closed: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if m, err := a.IsMaster(); !errors.Is(err, ErrClosed) || m {
		t.Errorf("IsMaster after Close = %v, %v; want ErrClosed", m, err)
	}
}

func TestIntegrationAtomicTopology(t *testing.T) {
	testutil.CheckFDs(t)
	d := openMaster(t)
	p := pipeline(t, d)
	t.Logf("virtual %s (%d): %v, %d modes, encoders %v", p.virtual.Name, p.virtual.ID, p.virtual.Status, len(p.virtual.Modes), p.virtual.Encoders)
	t.Logf("writeback %s (%d): %v, encoders %v", p.writeback.Name, p.writeback.ID, p.writeback.Status, p.writeback.Encoders)
	if p.virtual.Name != "Virtual-1" || p.virtual.Status != Connected || p.writeback.Name != "Writeback-1" {
		t.Errorf("connectors %q %v and %q", p.virtual.Name, p.virtual.Status, p.writeback.Name)
	}
	pref, ok := p.virtual.PreferredMode()
	if !ok || !pref.Preferred() || pref.HDisplay != 1024 || pref.VDisplay != 768 {
		t.Errorf("preferred mode %v (%+v), want vkms's default 1024x768", pref, pref)
	}
	if m, ok := p.virtual.FindMode(1024, 768); !ok || m != pref {
		t.Errorf("FindMode(1024, 768) = %v, %v; want the preferred mode", m, ok)
	}
	if m, ok := p.virtual.FindMode(640, 480); !ok || m.HDisplay != 640 {
		t.Errorf("FindMode(640, 480) = %v, %v", m, ok)
	}
	t.Logf("preferred %v (vrefresh %d, clock %d kHz)", pref, pref.VRefresh, pref.Clock)
	if r := pref.Refresh(); r < 55 || r > 65 {
		t.Errorf("preferred mode refresh %.2f Hz", r)
	}
	for _, id := range p.virtual.Encoders {
		e, err := d.Encoder(id)
		if err != nil {
			t.Fatal(err)
		}
		if e.PossibleCRTCs&1 == 0 {
			t.Errorf("encoder %+v cannot use the CRTC", e)
		}
	}
	for name, pr := range map[string]*Properties{"connector": p.connP, "writeback": p.wbP, "crtc": p.crtcP, "plane": p.planeP} {
		var want []string
		switch name {
		case "connector":
			want = []string{"CRTC_ID"}
		case "writeback":
			want = []string{"CRTC_ID", "WRITEBACK_FB_ID", "WRITEBACK_OUT_FENCE_PTR", "WRITEBACK_PIXEL_FORMATS"}
		case "crtc":
			want = []string{"ACTIVE", "MODE_ID"}
		case "plane":
			want = []string{"FB_ID", "CRTC_ID", "SRC_X", "SRC_Y", "SRC_W", "SRC_H", "CRTC_X", "CRTC_Y", "CRTC_W", "CRTC_H", "type"}
		}
		for _, n := range want {
			if pr.ID(n) == 0 {
				t.Errorf("%s %d has no property %q: %+v", name, pr.Object, n, pr.List)
			}
		}
	}
	formats, err := d.WritebackFormats(p.writeback.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writeback formats %v", formats)
	if !slices.Contains(formats, FormatXRGB8888) {
		t.Errorf("writeback formats %v lack XR24", formats)
	}
	if _, err := d.WritebackFormats(p.virtual.ID); !errors.Is(err, ErrNotSupported) {
		t.Errorf("WritebackFormats of the virtual connector: %v, want ErrNotSupported", err)
	}
	if _, err := d.Connector(0xfffff); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Connector(0xfffff): %v, want ENOENT", err)
	}
}

func TestIntegrationAtomicBlob(t *testing.T) {
	testutil.CheckFDs(t)
	d := openMaster(t)
	p := pipeline(t, d)
	mode, _ := p.virtual.PreferredMode()
	b, err := d.CreateModeBlob(mode)
	if err != nil {
		t.Fatal(err)
	}
	data, err := d.PropertyBlobData(b.ID())
	if err != nil {
		t.Fatal(err)
	}
	var back Mode
	if err := back.UnmarshalBinary(data); err != nil || back != mode {
		t.Errorf("mode blob reads back as %+v (%v), want %+v", back, err, mode)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.PropertyBlobData(b.ID()); !errors.Is(err, unix.ENOENT) {
		t.Errorf("blob after Close: %v, want ENOENT", err)
	}
	if _, err := d.CreatePropertyBlob(nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("empty blob: %v, want EINVAL", err)
	}
}

// One buffer shown on Virtual-1 by an atomic modeset, a flip event, then
// the CRTC moved to Writeback-1 and the frame captured into a second
// buffer, which must hold the same pixels; then everything is released.
func TestIntegrationAtomicShowAndCapture(t *testing.T) {
	testutil.CheckFDs(t)
	d := openMaster(t)
	p := pipeline(t, d)
	const w, h = 1024, 768
	mode, ok := p.virtual.FindMode(w, h)
	if !ok {
		t.Fatalf("no %dx%d mode", w, h)
	}
	fbsBefore := framebuffers(t, d)
	src := heapBuffer(t, "reserved", w*h*4)
	dst := heapBuffer(t, "reserved", w*h*4)
	want := fillXRGB(t, src, w, h, 0xff)
	l := Layout{Width: w, Height: h}

	hs, err := d.Import(src)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	fb, err := d.AddFB2(hs, l)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	blob, err := d.CreateModeBlob(mode)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()

	var show AtomicRequest
	show.SetProperty(p.connP, "CRTC_ID", uint64(p.crtc))
	show.SetProperty(p.crtcP, "MODE_ID", uint64(blob.ID()))
	show.SetProperty(p.crtcP, "ACTIVE", 1)
	for n, v := range map[string]uint64{
		"FB_ID": uint64(fb.ID()), "CRTC_ID": uint64(p.crtc),
		"SRC_X": 0, "SRC_Y": 0, "SRC_W": w << 16, "SRC_H": h << 16,
		"CRTC_X": 0, "CRTC_Y": 0, "CRTC_W": w, "CRTC_H": h,
	} {
		show.SetProperty(p.planeP, n, v)
	}
	if err := show.Err(); err != nil {
		t.Fatal(err)
	}
	if f, err := d.AtomicCommit(&show, AtomicTestOnly); err == nil || len(f) != 0 {
		// Without ALLOW_MODESET a modeset is refused.
		t.Errorf("TEST_ONLY modeset without ALLOW_MODESET: %v, %v; want EINVAL", f, err)
	}
	if _, err := d.AtomicCommit(&show, AtomicTestOnly|AtomicAllowModeset); err != nil {
		t.Fatal(err)
	}
	show.UserData = 0x5eed
	if _, err := d.AtomicCommit(&show, AtomicAllowModeset|AtomicPageFlipEvent); err != nil {
		t.Fatal(err)
	}
	ev, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := ev.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("event %+v", e)
	// The event of the commit that switches the CRTC on comes before its
	// first vblank: sequence 0, timestamp 0 (seen on 6.1).
	if e.Type != EventFlipComplete || e.UserData != 0x5eed || e.CRTCID != p.crtc {
		t.Errorf("event %+v, want flip-complete of CRTC %d with user data 0x5eed", e, p.crtc)
	}
	crtc, err := d.CRTC(p.crtc)
	if err != nil {
		t.Fatal(err)
	}
	if crtc.Mode == nil || *crtc.Mode != mode || crtc.FBID != fb.ID() {
		t.Errorf("CRTC %+v, want mode %v and framebuffer %d", crtc, mode, fb.ID())
	}
	short, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if e, err := ev.Read(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Read with no event pending: %+v, %v; want DeadlineExceeded", e, err)
	}
	scancel()

	// No cloning on vkms: both connectors on the CRTC is refused.
	hd, err := d.Import(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	wbfb, err := d.AddFB2(hd, l)
	if err != nil {
		t.Fatal(err)
	}
	defer wbfb.Close()
	var clone AtomicRequest
	clone.SetProperty(p.wbP, "CRTC_ID", uint64(p.crtc))
	clone.SetWriteback(p.wbP, wbfb)
	if _, err := d.AtomicCommit(&clone, AtomicTestOnly|AtomicAllowModeset); !errors.Is(err, unix.EINVAL) {
		t.Errorf("cloning Virtual-1 and Writeback-1: %v, want EINVAL", err)
	}

	var capture AtomicRequest
	capture.SetProperty(p.connP, "CRTC_ID", 0)
	capture.SetProperty(p.wbP, "CRTC_ID", uint64(p.crtc))
	idx := capture.SetWriteback(p.wbP, wbfb)
	if idx != 0 || capture.Err() != nil {
		t.Fatalf("SetWriteback = %d, %v", idx, capture.Err())
	}
	start := time.Now()
	fences, err := d.AtomicCommit(&capture, AtomicAllowModeset)
	if err != nil {
		t.Fatal(err)
	}
	if len(fences) != 1 || fences[0] == nil {
		t.Fatalf("fences %v, want one", fences)
	}
	defer fences[0].Close()
	if err := fences[0].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("writeback fence signalled %v after the commit", time.Since(start))
	if ok, err := fences[0].Signaled(); !ok || err != nil {
		t.Errorf("Signaled after Wait = %v, %v", ok, err)
	}
	got := readBuffer(t, dst, w*h*4)
	if !bytes.Equal(got, want) {
		n, first := 0, -1
		for i := 0; i < len(got); i += 4 {
			if !bytes.Equal(got[i:i+4], want[i:i+4]) {
				n++
				if first < 0 {
					first = i / 4
				}
			}
		}
		t.Errorf("capture differs in %d of %d pixels; first at (%d,%d): got % x want % x", n, w*h, first%w, first/w, got[first*4:first*4+4], want[first*4:first*4+4])
	}
	if err := fences[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := fences[0].Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}

	// Switch everything off again and release.
	var off AtomicRequest
	off.SetProperty(p.wbP, "CRTC_ID", 0)
	off.SetProperty(p.connP, "CRTC_ID", 0)
	off.SetProperty(p.crtcP, "ACTIVE", 0)
	off.SetProperty(p.crtcP, "MODE_ID", 0)
	off.SetProperty(p.planeP, "FB_ID", 0)
	off.SetProperty(p.planeP, "CRTC_ID", 0)
	if _, err := d.AtomicCommit(&off, AtomicAllowModeset); err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ Close() error }{ev, wbfb, fb, hd, hs, blob} {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}
	if n := framebuffers(t, d); n != fbsBefore {
		t.Errorf("%d framebuffers after release, %d before", n, fbsBefore)
	}
	if n := d.OpenHandles(); n != 0 {
		t.Errorf("%d GEM handles still open", n)
	}
	for _, b := range []*dmabuf.Buffer{src, dst} {
		if a := attachments(t, b); len(a) != 0 {
			t.Errorf("buffer still attached to %v", a)
		}
	}
}

// A non-master Device may query but not commit.
func TestIntegrationAtomicNotMaster(t *testing.T) {
	testutil.CheckFDs(t)
	m := openMaster(t)
	p := pipeline(t, m)
	d := openNode(t, vkmsInfo(t), NodePrimary)
	if err := d.EnableAtomic(); err != nil {
		t.Fatal(err)
	}
	var r AtomicRequest
	r.SetProperty(p.crtcP, "ACTIVE", 0)
	if _, err := d.AtomicCommit(&r, AtomicAllowModeset); !errors.Is(err, ErrNotMaster) || !errors.Is(err, unix.EACCES) {
		t.Errorf("commit without master: %v, want ErrNotMaster (EACCES)", err)
	}
	if _, err := d.AtomicCommit(&r, AtomicTestOnly|AtomicAllowModeset); err != nil {
		t.Logf("TEST_ONLY without master: %v", err)
	}
}
