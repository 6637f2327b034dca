package uapi

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Layouts that are the same on every architecture (no pointer-sized
// fields; struct drm_mode_crtc's u64 comes first, so no i386 difference).
func TestDRMAtomicLayoutsAllArches(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof drm_mode_modeinfo", unsafe.Sizeof(DRMModeModeInfo{}), DRMModeModeInfoSize},
		{"sizeof drm_mode_get_connector", unsafe.Sizeof(DRMModeGetConnector{}), 80},
		{"sizeof drm_mode_crtc", unsafe.Sizeof(DRMModeCRTC{}), 104},
		{"sizeof drm_mode_atomic", unsafe.Sizeof(DRMModeAtomic{}), 56},
		{"sizeof drm_mode_create_blob", unsafe.Sizeof(DRMModeCreateBlob{}), 16},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestDRMModeModeInfoBytes(t *testing.T) {
	m := DRMModeModeInfo{
		Clock: 65000, HDisplay: 1024, HSyncStart: 1048, HSyncEnd: 1184, HTotal: 1344,
		VDisplay: 768, VSyncStart: 771, VSyncEnd: 777, VTotal: 806, VRefresh: 60,
		Flags: 0xa, Type: DRMModeTypeDriver | DRMModeTypePreferred,
	}
	copy(m.Name[:], "1024x768")
	b := m.Bytes()
	ne := binary.NativeEndian
	if len(b) != 68 || ne.Uint32(b[0:]) != 65000 || ne.Uint16(b[4:]) != 1024 || ne.Uint16(b[14:]) != 768 ||
		ne.Uint16(b[20:]) != 806 || ne.Uint32(b[24:]) != 60 || ne.Uint32(b[28:]) != 0xa ||
		ne.Uint32(b[32:]) != 0x48 || string(b[36:44]) != "1024x768" || b[44] != 0 {
		t.Fatalf("Bytes() = % x", b)
	}
	back, err := DRMModeModeInfoFromBytes(b)
	if err != nil || back != m {
		t.Errorf("DRMModeModeInfoFromBytes = %+v, %v; want %+v", back, err, m)
	}
	if _, err := DRMModeModeInfoFromBytes(b[:67]); err == nil {
		t.Error("DRMModeModeInfoFromBytes accepted 67 bytes")
	}
}

func TestDRMAtomicArgsCheck(t *testing.T) {
	ok := DRMAtomicArgs{Objs: []uint32{1, 2}, CountProps: []uint32{2, 1}, Props: []uint32{3, 4, 5}, Values: []uint64{6, 7, 8}, OutFences: []int{2}}
	if err := ok.check(); err != nil {
		t.Errorf("check(%+v) = %v", ok, err)
	}
	for name, a := range map[string]DRMAtomicArgs{
		"objs vs counts":     {Objs: []uint32{1}, CountProps: nil},
		"counts vs props":    {Objs: []uint32{1}, CountProps: []uint32{2}, Props: []uint32{3}, Values: []uint64{4}},
		"props vs values":    {Objs: []uint32{1}, CountProps: []uint32{1}, Props: []uint32{3}, Values: nil},
		"fence out of range": {Objs: []uint32{1}, CountProps: []uint32{1}, Props: []uint32{3}, Values: []uint64{4}, OutFences: []int{1}},
		"negative fence":     {Objs: []uint32{1}, CountProps: []uint32{1}, Props: []uint32{3}, Values: []uint64{4}, OutFences: []int{-1}},
	} {
		if err := a.check(); !errors.Is(err, errBadAtomicArgs) {
			t.Errorf("%s: check = %v, want errBadAtomicArgs", name, err)
		}
		if _, err := DRMModeAtomicCommit(-1, &a); !errors.Is(err, errBadAtomicArgs) {
			t.Errorf("%s: DRMModeAtomicCommit = %v, want errBadAtomicArgs before any ioctl", name, err)
		}
	}
}

// vblankEvent builds a struct drm_event_vblank in host byte order.
func vblankEvent(typ uint32, user uint64, sec, usec, seq, crtc uint32) []byte {
	b := make([]byte, 32)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], typ)
	ne.PutUint32(b[4:], 32)
	ne.PutUint64(b[8:], user)
	ne.PutUint32(b[16:], sec)
	ne.PutUint32(b[20:], usec)
	ne.PutUint32(b[24:], seq)
	ne.PutUint32(b[28:], crtc)
	return b
}

func TestDRMParseEvents(t *testing.T) {
	seq := make([]byte, 32)
	ne := binary.NativeEndian
	ne.PutUint32(seq[0:], DRMEventCRTCSequence)
	ne.PutUint32(seq[4:], 32)
	ne.PutUint64(seq[8:], 9)
	ne.PutUint64(seq[16:], 123456789)
	ne.PutUint64(seq[24:], 1<<40)
	unknown := []byte{0x00, 0x00, 0x00, 0x80, 12, 0, 0, 0, 1, 2, 3, 4}
	if binary.NativeEndian.Uint32([]byte{1, 0, 0, 0}) != 1 { // big-endian host
		unknown = []byte{0x80, 0x00, 0x00, 0x00, 0, 0, 0, 12, 1, 2, 3, 4}
	}
	var in []byte
	in = append(in, vblankEvent(DRMEventFlipComplete, 7, 10, 500, 42, 33)...)
	in = append(in, seq...)
	in = append(in, unknown...)
	in = append(in, vblankEvent(DRMEventVBlank, 8, 11, 0, 43, 33)...)
	got, err := DRMParseEvents(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []DRMEvent{
		{Type: DRMEventFlipComplete, Length: 32, UserData: 7, Sec: 10, Usec: 500, Sequence: 42, CRTCID: 33},
		{Type: DRMEventCRTCSequence, Length: 32, UserData: 9, TimeNS: 123456789, Sequence: 1 << 40},
		{Type: 0x80000000, Length: 12},
		{Type: DRMEventVBlank, Length: 32, UserData: 8, Sec: 11, Sequence: 43, CRTCID: 33},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("DRMParseEvents (-want +got):\n%s", d)
	}
	for name, b := range map[string][]byte{
		"short header":   in[:4],
		"truncated body": in[:31],
		"length 0":       make([]byte, 8),
		"short vblank":   append(vblankEvent(DRMEventVBlank, 0, 0, 0, 0, 0)[:4:4], 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		if _, err := DRMParseEvents(b); !errors.Is(err, errBadEvent) {
			t.Errorf("%s: err = %v, want errBadEvent", name, err)
		}
	}
	// Events before a broken one are returned.
	got, err = DRMParseEvents(append(vblankEvent(DRMEventVBlank, 1, 0, 0, 0, 0), 1, 2))
	if len(got) != 1 || err == nil {
		t.Errorf("partial: %v, %v; want one event and an error", got, err)
	}
}

func FuzzDRMParseEvents(f *testing.F) {
	f.Add(vblankEvent(DRMEventFlipComplete, 1, 2, 3, 4, 5))
	f.Add([]byte{})
	f.Add([]byte{3, 0, 0, 0, 32, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := DRMParseEvents(b)
		var n int
		for _, e := range evs {
			if e.Length < 8 {
				t.Fatalf("event with length %d", e.Length)
			}
			n += int(e.Length)
		}
		if n > len(b) || (err == nil && n != len(b)) {
			t.Fatalf("events cover %d of %d bytes (err %v)", n, len(b), err)
		}
	})
}

// The new wrappers report a non-DRM fd as the ioctl's ENOTTY.
func TestDRMAtomicWrappersOnNonDRMFD(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for name, call := range map[string]func() error{
		"set master":   func() error { return DRMSetMasterCall(fd) },
		"auth magic":   func() error { return DRMAuthMagicCall(fd, 0) },
		"crtc":         func() error { _, err := DRMModeGetCRTCCall(fd, 1); return err },
		"encoder":      func() error { _, err := DRMModeGetEncoderCall(fd, 1); return err },
		"connector":    func() error { _, err := DRMModeGetConnectorInfo(fd, 1, true); return err },
		"connector np": func() error { _, err := DRMModeGetConnectorInfo(fd, 1, false); return err },
		"create blob":  func() error { _, err := DRMModeCreatePropBlobCall(fd, []byte{1}); return err },
		"destroy blob": func() error { return DRMModeDestroyPropBlobCall(fd, 1) },
		"atomic": func() error {
			_, err := DRMModeAtomicCommit(fd, &DRMAtomicArgs{Objs: []uint32{1}, CountProps: []uint32{1}, Props: []uint32{2}, Values: []uint64{0}, OutFences: []int{0}})
			return err
		},
	} {
		if err := call(); !errors.Is(err, unix.ENOTTY) {
			t.Errorf("%s on %s: err = %v, want ENOTTY", name, os.DevNull, err)
		}
	}
}
