package drm

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/internal/uapi"
)

func testProps() (conn, crtc, plane, wb *Properties) {
	conn = &Properties{Object: 36, Type: ObjectConnector, List: []Property{{ID: 20, Name: "CRTC_ID"}}}
	crtc = &Properties{Object: 35, Type: ObjectCRTC, List: []Property{{ID: 22, Name: "ACTIVE"}, {ID: 23, Name: "MODE_ID"}, {ID: 24, Name: "OUT_FENCE_PTR"}}}
	plane = &Properties{Object: 31, Type: ObjectPlane, List: []Property{{ID: 16, Name: "FB_ID"}, {ID: 17, Name: "CRTC_ID"}}}
	wb = &Properties{Object: 43, Type: ObjectConnector, List: []Property{{ID: 20, Name: "CRTC_ID"}, {ID: 40, Name: "WRITEBACK_FB_ID"}, {ID: 41, Name: "WRITEBACK_OUT_FENCE_PTR"}}}
	return
}

func TestAtomicRequestBuild(t *testing.T) {
	conn, crtc, plane, wb := testProps()
	var r AtomicRequest
	r.SetProperty(plane, "FB_ID", 7)
	r.SetProperty(conn, "CRTC_ID", 35)
	r.SetProperty(crtc, "MODE_ID", 99)
	r.SetProperty(plane, "CRTC_ID", 35)
	r.SetProperty(crtc, "ACTIVE", 1)
	r.SetProperty(plane, "FB_ID", 8) // the last value wins, in place
	if i := r.SetWriteback(wb, &Framebuffer{id: 12}); i != 0 {
		t.Errorf("SetWriteback index %d, want 0", i)
	}
	if i := r.SetOutFence(crtc, "OUT_FENCE_PTR"); i != 1 {
		t.Errorf("SetOutFence index %d, want 1", i)
	}
	if i := r.SetOutFence(wb, "WRITEBACK_OUT_FENCE_PTR"); i != 0 {
		t.Errorf("repeated SetOutFence index %d, want 0", i)
	}
	r.UserData = 77
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 8 {
		t.Errorf("Len = %d, want 8", r.Len())
	}
	got, err := r.args(AtomicAllowModeset | AtomicNonblock)
	if err != nil {
		t.Fatal(err)
	}
	want := uapi.DRMAtomicArgs{
		Flags:      0x0600,
		Objs:       []uint32{31, 36, 35, 43},
		CountProps: []uint32{2, 1, 3, 2},
		Props:      []uint32{16, 17, 20, 23, 22, 24, 40, 41},
		Values:     []uint64{8, 35, 35, 99, 1, 0, 12, 0},
		OutFences:  []int{7, 5},
		UserData:   77,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("args (-want +got):\n%s", d)
	}
	var empty AtomicRequest
	if a, err := empty.args(0); err != nil || len(a.Objs) != 0 {
		t.Errorf("empty request: %+v, %v", a, err)
	}
}

func TestAtomicRequestMistakes(t *testing.T) {
	conn, crtc, _, wb := testProps()
	for name, build := range map[string]func(r *AtomicRequest){
		"unknown property": func(r *AtomicRequest) { r.SetProperty(conn, "MODE_ID", 1) },
		"nil object":       func(r *AtomicRequest) { r.SetProperty(nil, "ACTIVE", 1) },
		"object 0":         func(r *AtomicRequest) { r.Set(0, 22, 1) },
		"property 0":       func(r *AtomicRequest) { r.Set(35, 0, 1) },
		"fence on non-fence property": func(r *AtomicRequest) {
			if i := r.SetOutFence(crtc, "NOPE"); i != -1 {
				panic("index for a missing property")
			}
		},
		"plain value on a fence": func(r *AtomicRequest) {
			r.SetOutFence(crtc, "OUT_FENCE_PTR")
			r.SetProperty(crtc, "OUT_FENCE_PTR", 5)
		},
		"nil writeback fb": func(r *AtomicRequest) { r.SetWriteback(wb, nil) },
	} {
		var r AtomicRequest
		build(&r)
		r.SetProperty(crtc, "ACTIVE", 1) // later good calls keep the first error
		if err := r.Err(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: Err = %v, want ErrBadRequest", name, err)
		}
		if _, err := r.args(0); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: args = %v, want ErrBadRequest", name, err)
		}
		if _, err := (&Device{path: "x", fd: -1}).AtomicCommit(&r, 0); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: AtomicCommit = %v, want ErrBadRequest before any ioctl", name, err)
		}
	}
	var r AtomicRequest
	for _, f := range []AtomicFlags{1 << 20, AtomicTestOnly | AtomicPageFlipEvent} {
		if _, err := r.args(f); !errors.Is(err, ErrBadRequest) {
			t.Errorf("flags %v: %v, want ErrBadRequest", f, err)
		}
	}
}

func TestAtomicFlagsString(t *testing.T) {
	for f, want := range map[AtomicFlags]string{
		0:                                    "0",
		AtomicAllowModeset:                   "ALLOW_MODESET",
		AtomicNonblock | AtomicPageFlipEvent: "PAGE_FLIP_EVENT|NONBLOCK",
		AtomicTestOnly | 1<<12:               "TEST_ONLY|0x1000",
	} {
		if got := f.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint32(f), got, want)
		}
	}
}

func TestMasterOnClosedDevice(t *testing.T) {
	var nilDev *Device
	if err := nilDev.SetMaster(); !errors.Is(err, ErrClosed) {
		t.Errorf("nil SetMaster: %v", err)
	}
	if err := nilDev.DropMaster(); err != nil {
		t.Errorf("nil DropMaster: %v", err)
	}
	if _, err := nilDev.IsMaster(); !errors.Is(err, ErrClosed) {
		t.Errorf("nil IsMaster: %v", err)
	}
	if _, err := nilDev.AtomicCommit(nil, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("nil AtomicCommit: %v", err)
	}
	if _, err := nilDev.Events(); !errors.Is(err, ErrClosed) {
		t.Errorf("nil Events: %v", err)
	}
	closed := &Device{path: "/dev/dri/card9", node: NodePrimary, fd: -1}
	if err := closed.DropMaster(); err != nil {
		t.Errorf("DropMaster on a closed Device: %v, want nil", err)
	}
	if err := closed.SetMaster(); !errors.Is(err, ErrClosed) {
		t.Errorf("SetMaster on a closed Device: %v", err)
	}
	render := &Device{path: "/dev/dri/renderD128", node: NodeRender, fd: -1}
	if err := render.SetMaster(); !errors.Is(err, ErrNeedPrimary) {
		t.Errorf("SetMaster on a render node: %v, want ErrNeedPrimary", err)
	}
	if m, err := render.IsMaster(); m || err != nil {
		t.Errorf("IsMaster on a render node: %v, %v", m, err)
	}
	if _, err := OpenMaster("/nonexistent/card0"); err == nil {
		t.Error("OpenMaster of a missing node succeeded")
	}
}
