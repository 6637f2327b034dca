package drm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/leak"
	"github.com/heapd/heapd/internal/uapi"
)

// drmMajor is the character major of DRM primary and render nodes.
const drmMajor = 226

// Version is a DRM driver's answer to DRM_IOCTL_VERSION.
type Version struct {
	Major int32  `json:"major"`
	Minor int32  `json:"minor"`
	Patch int32  `json:"patch"`
	Name  string `json:"name"` // "vkms", "vgem", "vc4", "v3d", "i915"
	Date  string `json:"date,omitempty"`
	Desc  string `json:"desc,omitempty"`
}

// Caps are a device's capabilities as GET_CAP reports them. A capability
// the kernel does not answer (an error) reads as false.
type Caps struct {
	// PrimeImport and PrimeExport: DMA-BUF import (fd → handle) and export
	// (handle → fd).
	PrimeImport bool `json:"prime_import"`
	PrimeExport bool `json:"prime_export"`
	// DumbBuffer is the kernel's DRM_CAP_DUMB_BUFFER answer, which only
	// KMS drivers give: vgem answers with an error, yet CREATE_DUMB works on
	// its primary node. CreateDumb therefore does not consult it.
	DumbBuffer bool `json:"dumb_buffer"`
	// AddFB2Modifiers says ADDFB2 accepts explicit format modifiers.
	AddFB2Modifiers bool `json:"addfb2_modifiers"`
}

// Device is one open DRM node (card* or renderD*) with its handle table.
//
// A Device is safe for concurrent use; its ioctls are serialised by one
// mutex (they are short and never wait for hardware). Close is idempotent
// and nil-safe; it releases every GEM handle and framebuffer made through
// the Device (the kernel frees them with the fd) and any other method after
// it returns ErrClosed. If a Device becomes unreachable without Close, a
// cleanup closes its fd and the leak is counted (tests fail on it): always
// Close.
type Device struct {
	path    string
	node    NodeType
	version Version
	caps    Caps
	cleanup runtime.Cleanup

	mu        sync.Mutex
	fd        int                   // -1 once closed
	handles   map[uint32]*handleRef // GEM handle -> references
	kms       *bool                 // nil until checked
	universal bool                  // UNIVERSAL_PLANES set on fd
	propNames map[uint32]string     // property ID -> name
}

// Open opens the DRM node at path read-write and close-on-exec, identifies
// it (DRM_IOCTL_VERSION) and reads its capabilities. The returned Device owns
// the new fd; the caller must Close it.
//
// When the kernel makes the opener of a primary node DRM master (no master
// exists yet), Open drops master again at once: heapd never needs it, and
// holding it would keep a compositor from taking the display.
//
// Errors: a *os.PathError for open itself (so "permission denied" names
// the node); ErrNotDRM when path is not a DRM node.
func Open(path string) (*Device, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	d, err := newDevice(fd, path)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// newDevice identifies fd (owned by the caller until success).
func newDevice(fd int, path string) (*Device, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("drm: %s: %w", path, os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return nil, fmt.Errorf("drm: %s is not a character device: %w", path, ErrNotDRM)
	}
	v, err := uapi.DRMVersionQuery(fd)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("drm: %s: %w (%w)", path, ErrNotDRM, err)
		}
		return nil, fmt.Errorf("drm: %s: %w", path, err)
	}
	d := &Device{
		path:    path,
		node:    nodeTypeOf(uint64(st.Rdev)), // uint32 on mips
		version: Version{Major: v.Major, Minor: v.Minor, Patch: v.Patch, Name: v.Name, Date: v.Date, Desc: v.Desc},
		fd:      fd,
		handles: map[uint32]*handleRef{},
	}
	d.caps = queryCaps(fd)
	if d.node == NodePrimary {
		_ = uapi.DRMDropMasterCall(fd) // EINVAL: we were not master
	}
	d.cleanup = runtime.AddCleanup(d, func(fd int) {
		leak.Collected("drm device")
		unix.Close(fd)
	}, fd)
	return d, nil
}

// nodeTypeOf tells a render node from a primary node by the sysfs name of
// the device number, falling back to the classic minor ranges (render
// nodes 128-191).
func nodeTypeOf(rdev uint64) NodeType {
	maj, min := unix.Major(rdev), unix.Minor(rdev)
	if t, err := os.Readlink(fmt.Sprintf("/sys/dev/char/%d:%d", maj, min)); err == nil {
		if strings.HasPrefix(filepath.Base(t), "renderD") {
			return NodeRender
		}
		return NodePrimary
	}
	if maj == drmMajor && min >= 128 && min < 192 {
		return NodeRender
	}
	return NodePrimary
}

// queryCaps asks GET_CAP tolerantly: an error means "no".
func queryCaps(fd int) Caps {
	get := func(c uint64) uint64 {
		v, err := uapi.DRMGetCapCall(fd, c)
		if err != nil {
			return 0
		}
		return v
	}
	prime := get(uapi.DRMCapPrime)
	return Caps{
		PrimeImport:     prime&uapi.DRMPrimeCapImport != 0,
		PrimeExport:     prime&uapi.DRMPrimeCapExport != 0,
		DumbBuffer:      get(uapi.DRMCapDumbBuffer) != 0,
		AddFB2Modifiers: get(uapi.DRMCapAddFB2Modifiers) != 0,
	}
}

// Path returns the node path the Device was opened with; "" on nil.
func (d *Device) Path() string {
	if d == nil {
		return ""
	}
	return d.path
}

// NodeType returns whether the Device is a primary or a render node.
func (d *Device) NodeType() NodeType {
	if d == nil {
		return NodePrimary
	}
	return d.node
}

// Version returns the driver's DRM_IOCTL_VERSION answer, read at Open. It
// stays valid after Close; zero on nil.
func (d *Device) Version() Version {
	if d == nil {
		return Version{}
	}
	return d.version
}

// Driver returns the DRM driver's name ("vkms"); "" on nil.
func (d *Device) Driver() string { return d.Version().Name }

// Caps returns the capabilities read at Open. They stay valid after Close;
// zero on nil.
func (d *Device) Caps() Caps {
	if d == nil {
		return Caps{}
	}
	return d.caps
}

// String returns "vkms (/dev/dri/card1)".
func (d *Device) String() string {
	if d == nil {
		return "<nil drm.Device>"
	}
	return fmt.Sprintf("%s (%s)", d.version.Name, d.path)
}

// Close closes the fd, which frees every GEM handle, dumb buffer and
// framebuffer made through the Device; Handles and Framebuffers still open
// become no-ops to Close. DMA-BUFs exported from it stay valid. Close is
// idempotent and nil-safe.
func (d *Device) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	d.cleanup.Stop()
	err := unix.Close(d.fd)
	d.fd = -1
	clear(d.handles)
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// locked runs f with d.mu held and the fd open; ErrClosed otherwise.
func (d *Device) locked(f func(fd int) error) error {
	if d == nil {
		return ErrClosed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return fmt.Errorf("drm: %s: %w", d.path, ErrClosed)
	}
	return f(d.fd)
}

// needPrimary returns ErrNeedPrimary for a render node.
func (d *Device) needPrimary(op string) error {
	if d.node != NodePrimary {
		return fmt.Errorf("drm: %s on %s: %w: open the device's card* node", op, d, ErrNeedPrimary)
	}
	return nil
}

// kmsLocked reports (and caches) whether the device has mode setting; d.mu
// must be held. A driver without KMS answers GETRESOURCES with EOPNOTSUPP.
func (d *Device) kmsLocked(fd int) (bool, error) {
	if d.kms != nil {
		return *d.kms, nil
	}
	_, err := uapi.DRMModeGetResourcesIDs(fd)
	var kms bool
	switch {
	case err == nil:
		kms = true
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		kms = false
	default:
		return false, err
	}
	d.kms = &kms
	return kms, nil
}

// kmsOp runs a mode-setting operation: it checks the node type and that the
// device has KMS, then runs f with d.mu held.
func (d *Device) kmsOp(op string, f func(fd int) error) error {
	if d == nil {
		return ErrClosed
	}
	if err := d.needPrimary(op); err != nil {
		return err
	}
	return d.locked(func(fd int) error {
		kms, err := d.kmsLocked(fd)
		if err != nil {
			return fmt.Errorf("drm: %s on %s: %w", op, d, err)
		}
		if !kms {
			return fmt.Errorf("drm: %s on %s: %w", op, d, ErrNoKMS)
		}
		return f(fd)
	})
}

// HasKMS reports whether the device does mode setting (GETRESOURCES works
// on its primary node). A render node gives ErrNeedPrimary: ask the primary
// node, or use DeviceInfo.KMS. Safe for concurrent use.
func (d *Device) HasKMS() (bool, error) {
	if d == nil {
		return false, ErrClosed
	}
	if err := d.needPrimary("HasKMS"); err != nil {
		return false, err
	}
	var kms bool
	err := d.locked(func(fd int) error {
		var err error
		kms, err = d.kmsLocked(fd)
		return err
	})
	return kms, err
}

// query fills the ioctl-based fields of a discovered device: it opens the
// render node (or, failing that, the primary node).
func query(info *DeviceInfo) {
	var errs []string
	for _, n := range []*Node{info.Render, info.Primary} {
		if n == nil {
			continue
		}
		d, err := Open(n.Path)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		v, c := d.Version(), d.Caps()
		info.Version, info.Caps = &v, &c
		if v.Name != "" {
			info.Driver = v.Name
		}
		if n.Type == NodePrimary && !info.KMS {
			if kms, err := d.HasKMS(); err == nil {
				info.KMS = kms
			}
		}
		d.Close()
		return
	}
	info.QueryError = strings.Join(errs, "; ")
}
