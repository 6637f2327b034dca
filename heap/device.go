package heap

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// Device is a DRM device as the resolver and multi-device allocation use
// it. The real implementation opens the device's node; tests use fakes.
// Implementations are safe for concurrent use and own the fds they open,
// released by Close. Buffers passed in stay owned by the caller.
type Device interface {
	// Info describes the device (id, driver, nodes, KMS, IOMMU).
	Info() drm.DeviceInfo
	// Probe asks a display device whether it can scan out buf in layout l
	// (PRIME import + ADDFB2 + release). A refusal is a result, not an
	// error.
	Probe(buf *dmabuf.Buffer, l drm.Layout) (drm.ProbeResult, error)
	// CheckImport PRIME-imports buf and releases it again: nil when the
	// device accepted it.
	CheckImport(buf *dmabuf.Buffer) error
	// AllocDumb allocates a dumb buffer of size bytes on a display device
	// and exports it (the caller owns the Buffer).
	AllocDumb(size int64) (*dmabuf.Buffer, error)
	// Close releases the device's fds.
	Close() error
}

// drmDevice is a Device that opens its node for each operation and closes
// it afterwards: the primary node of a display, the render node (or the
// primary when there is none) of a render-only device. Holding no fd
// between operations is what lets a driver module unload (vkms, a USB
// display) while heapd runs: an open DRM fd pins the module.
type drmDevice struct {
	info drm.DeviceInfo
}

// openDevice checks that the node the resolver needs for info can be
// opened, and returns the Device.
func openDevice(info drm.DeviceInfo) (*drmDevice, error) {
	d := &drmDevice{info: info}
	dev, err := d.open()
	if err != nil {
		return nil, err
	}
	dev.Close()
	return d, nil
}

func (d *drmDevice) open() (*drm.Device, error) {
	t := drm.NodeRender
	if d.info.Display() || d.info.Render == nil {
		t = drm.NodePrimary
	}
	return d.info.Open(t)
}

func (d *drmDevice) Info() drm.DeviceInfo { return d.info }

func (d *drmDevice) Probe(buf *dmabuf.Buffer, l drm.Layout) (drm.ProbeResult, error) {
	dev, err := d.open()
	if err != nil {
		return drm.ProbeResult{}, fmt.Errorf("device %s (%s): %w", d.info.ID, d.info.Driver, err)
	}
	res, err := drm.Probe(dev, buf, l)
	return res, errors.Join(err, dev.Close())
}

func (d *drmDevice) CheckImport(buf *dmabuf.Buffer) error {
	dev, err := d.open()
	if err != nil {
		return fmt.Errorf("device %s (%s): %w", d.info.ID, d.info.Driver, err)
	}
	defer dev.Close()
	h, err := dev.Import(buf)
	if err != nil {
		return err
	}
	return h.Close()
}

func (d *drmDevice) AllocDumb(size int64) (*dmabuf.Buffer, error) {
	if !d.info.Display() {
		return nil, fmt.Errorf("device %s (%s) has no display: %w", d.info.ID, d.info.Driver, drm.ErrNoKMS)
	}
	dev, err := d.open()
	if err != nil {
		return nil, fmt.Errorf("device %s (%s): %w", d.info.ID, d.info.Driver, err)
	}
	defer dev.Close()
	return drm.AllocateDumb(dev, size)
}

// Close releases nothing: no fd is held between operations.
func (d *drmDevice) Close() error { return nil }

// dumbHeap allocates dumb buffers on one display device: the memory the
// display can always scan out, and the last resort (it is what Mesa's kmsro
// does by opening the primary node; heapd does it on the client's behalf).
type dumbHeap struct {
	dev Device
}

func (h dumbHeap) Info() Info {
	di := h.dev.Info()
	return Info{
		Name:       "dumb/" + di.ID,
		Backend:    BackendDumb,
		Target:     nodePath(di.Primary),
		Properties: Properties{DeviceImportable: true},
		Note:       "dumb buffer on the display's primary node",
	}
}

func (h dumbHeap) Alloc(_ context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	buf, err := h.dev.AllocDumb(size)
	if err != nil {
		return nil, err
	}
	return nameBuffer(buf, opts.Name)
}

func nodePath(n *drm.Node) string {
	if n == nil {
		return ""
	}
	return n.Path
}

// errnoOf returns the errno inside err, 0 when there is none.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}
