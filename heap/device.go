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

// drmDevice is a Device over an open node: the primary node of a display,
// the render node (or primary when there is none) of a render-only device.
type drmDevice struct {
	info drm.DeviceInfo
	dev  *drm.Device
}

// openDevice opens the node the resolver needs for info.
func openDevice(info drm.DeviceInfo) (*drmDevice, error) {
	t := drm.NodeRender
	if info.Display() || info.Render == nil {
		t = drm.NodePrimary
	}
	d, err := info.Open(t)
	if err != nil {
		return nil, err
	}
	return &drmDevice{info: info, dev: d}, nil
}

func (d *drmDevice) Info() drm.DeviceInfo { return d.info }

func (d *drmDevice) Probe(buf *dmabuf.Buffer, l drm.Layout) (drm.ProbeResult, error) {
	return drm.Probe(d.dev, buf, l)
}

func (d *drmDevice) CheckImport(buf *dmabuf.Buffer) error {
	h, err := d.dev.Import(buf)
	if err != nil {
		return err
	}
	return h.Close()
}

func (d *drmDevice) AllocDumb(size int64) (*dmabuf.Buffer, error) {
	if !d.info.Display() {
		return nil, fmt.Errorf("device %s (%s) has no display: %w", d.info.ID, d.info.Driver, drm.ErrNoKMS)
	}
	return drm.AllocateDumb(d.dev, size)
}

func (d *drmDevice) Close() error { return d.dev.Close() }

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
