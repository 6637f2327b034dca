package drm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/testutil"
)

func TestOpenNotDRM(t *testing.T) {
	testutil.CheckFDs(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
	}{
		{os.DevNull, ErrNotDRM}, // a character device that is not DRM
		{file, ErrNotDRM},
		{filepath.Join(t.TempDir(), "missing"), fs.ErrNotExist},
	} {
		d, err := Open(tc.path)
		if !errors.Is(err, tc.want) {
			d.Close()
			t.Errorf("Open(%s): err = %v, want %v", tc.path, err, tc.want)
		}
	}
	// A missing node is reported as a *os.PathError naming it.
	_, err := Open("/nonexistent/dri/card0")
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Path != "/nonexistent/dri/card0" {
		t.Errorf("Open of a missing node: err = %#v, want *os.PathError", err)
	}
}

// Every method is safe on a nil Device and reports ErrClosed where it must
// return an error.
func TestNilDevice(t *testing.T) {
	var d *Device
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d.Path() != "" || d.Driver() != "" || d.Caps() != (Caps{}) || d.Version() != (Version{}) || d.NodeType() != NodePrimary {
		t.Error("accessors on nil Device are not zero")
	}
	if d.String() == "" {
		t.Error("String on nil Device is empty")
	}
	for name, call := range map[string]func() error{
		"Import":     func() error { _, err := d.Import(nil); return err },
		"ImportFD":   func() error { _, err := d.ImportFD(0); return err },
		"Export":     func() error { _, err := d.Export(nil); return err },
		"CreateDumb": func() error { _, err := d.CreateDumb(1, 1, 32); return err },
		"Resources":  func() error { _, err := d.Resources(); return err },
		"Planes":     func() error { _, err := d.Planes(); return err },
		"AddFB2":     func() error { _, err := d.AddFB2(nil, Layout{}); return err },
		"HasKMS":     func() error { _, err := d.HasKMS(); return err },
		"Probe":      func() error { _, err := Probe(d, nil, Layout{}); return err },
		"Allocate":   func() error { _, err := AllocateDumb(d, 4096); return err },
	} {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s on nil Device: err = %v, want ErrClosed", name, err)
		}
	}
	var h *Handle
	var fb *Framebuffer
	var b *DumbBuffer
	var m *Mapping
	if h.Close() != nil || fb.Close() != nil || b.Close() != nil || m.Close() != nil {
		t.Error("Close on nil is not a no-op")
	}
	if h.ID() != 0 || h.Device() != nil || fb.ID() != 0 || b.Handle() != nil || m.Bytes() != nil {
		t.Error("accessors on nil are not zero")
	}
	if _, err := b.Export(); !errors.Is(err, ErrClosed) {
		t.Errorf("Export of nil DumbBuffer: %v", err)
	}
	if _, err := b.Map(); !errors.Is(err, ErrClosed) {
		t.Errorf("Map of nil DumbBuffer: %v", err)
	}
}

// fakeDevice returns a Device over /dev/null: every ioctl fails with
// ENOTTY, which is enough to see whether one was issued.
func fakeDevice(t *testing.T, node NodeType, caps Caps) *Device {
	t.Helper()
	fd, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{path: os.DevNull, node: node, caps: caps, fd: fd, handles: map[uint32]*handleRef{}, version: Version{Name: "fake"}}
	t.Cleanup(func() { d.Close() })
	return d
}

// The handle table closes a GEM handle only when its last reference goes.
func TestHandleRefcount(t *testing.T) {
	d := fakeDevice(t, NodeRender, Caps{PrimeImport: true})
	d.mu.Lock()
	d.acquire(7, false)
	d.acquire(7, false)
	d.mu.Unlock()
	a, b := d.newHandle(7), d.newHandle(7)
	if a.ID() != 7 || b.ID() != 7 || d.handleRefs(7) != 2 {
		t.Fatalf("ids %d %d refs %d, want 7 7 2", a.ID(), b.ID(), d.handleRefs(7))
	}
	if err := b.Close(); err != nil { // not the last: no ioctl
		t.Fatalf("first Close: %v", err)
	}
	if err := b.Close(); err != nil || d.handleRefs(7) != 1 {
		t.Fatalf("second Close of the same Handle: %v, refs %d; want a no-op", err, d.handleRefs(7))
	}
	if err := d.check(b); !errors.Is(err, ErrClosed) {
		t.Errorf("check of a closed Handle: %v", err)
	}
	// The last reference issues GEM_CLOSE, which /dev/null refuses.
	if err := a.Close(); !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("last Close: err = %v, want the GEM_CLOSE ioctl's ENOTTY", err)
	}
	if d.handleRefs(7) != 0 {
		t.Errorf("refs after the last Close: %d", d.handleRefs(7))
	}

	// Dumb handles are destroyed with DESTROY_DUMB.
	d.mu.Lock()
	d.acquire(9, true)
	d.mu.Unlock()
	c := d.newHandle(9)
	if err := c.Close(); err == nil || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("dumb Close: %v", err)
	} else if want := "DRM_IOCTL_MODE_DESTROY_DUMB"; !strings.Contains(err.Error(), want) {
		t.Errorf("dumb Close: %v, want %s", err, want)
	}

	// After the Device is closed, Handles close silently.
	d.mu.Lock()
	d.acquire(11, false)
	d.mu.Unlock()
	e := d.newHandle(11)
	d.Close()
	if err := e.Close(); err != nil {
		t.Errorf("Close after the Device closed: %v", err)
	}
}

func TestWrongDeviceAndNode(t *testing.T) {
	render := fakeDevice(t, NodeRender, Caps{PrimeImport: true, PrimeExport: true})
	primary := fakeDevice(t, NodePrimary, Caps{PrimeImport: true, PrimeExport: true})
	primary.mu.Lock()
	primary.acquire(3, false)
	primary.mu.Unlock()
	h := primary.newHandle(3)
	defer func() {
		primary.mu.Lock()
		delete(primary.handles, 3) // no GEM_CLOSE on /dev/null
		primary.mu.Unlock()
		h.closed.Store(true)
		h.cleanup.Stop()
	}()
	if _, err := render.Export(h); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("Export of another device's handle: %v", err)
	}
	if _, err := render.AddFB2(h, Layout{Width: 1, Height: 1}); !errors.Is(err, ErrWrongDevice) {
		t.Errorf("AddFB2 with another device's handle: %v", err)
	}
	for name, call := range map[string]func() error{
		"CreateDumb": func() error { _, err := render.CreateDumb(64, 64, 32); return err },
		"Resources":  func() error { _, err := render.Resources(); return err },
		"Planes":     func() error { _, err := render.Planes(); return err },
		"HasKMS":     func() error { _, err := render.HasKMS(); return err },
	} {
		if err := call(); !errors.Is(err, ErrNeedPrimary) || !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s on a render node: err = %v, want ErrNeedPrimary", name, err)
		}
	}
	noPrime := fakeDevice(t, NodePrimary, Caps{})
	if _, err := noPrime.ImportFD(0); !errors.Is(err, ErrNotSupported) {
		t.Errorf("ImportFD without PRIME import: %v", err)
	}
}

// An emulated buffer is refused before any ioctl, by Import and by Probe.
func TestEmulatedBufferRefused(t *testing.T) {
	buf := emulatedBuffer(t, 4096)
	d := fakeDevice(t, NodePrimary, Caps{PrimeImport: true})
	if _, err := d.Import(buf); !errors.Is(err, ErrEmulated) {
		t.Errorf("Import of an emulated buffer: %v", err)
	}
	if _, err := Probe(d, buf, Layout{}); !errors.Is(err, ErrEmulated) {
		t.Errorf("Probe of an emulated buffer: %v", err)
	}
}

// ImportFD of an fd that is not a DMA-BUF says so.
func TestImportNotDMABuf(t *testing.T) {
	d := fakeDevice(t, NodeRender, Caps{PrimeImport: true})
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := d.ImportFD(int(f.Fd())); !errors.Is(err, dmabuf.ErrNotDMABuf) || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("ImportFD(/dev/null): %v, want ErrNotDMABuf and the ioctl's errno", err)
	}
}

// emulatedBuffer returns a sealed-memfd Buffer of size bytes.
func emulatedBuffer(t *testing.T, size int64) *dmabuf.Buffer {
	t.Helper()
	fd, err := unix.MemfdCreate("drm-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	b, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
