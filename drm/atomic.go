package drm

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/uapi"
)

// ErrNotMaster means an operation that needs DRM master (an atomic commit
// that changes the display) was refused because the Device is not master:
// open it with OpenMaster, or stop the compositor that holds the display.
var ErrNotMaster = errors.New("drm: not DRM master")

// OpenMaster opens the primary node at path like Open and makes the new fd
// DRM master (SET_MASTER), as a compositor must be to change the display.
// The returned Device owns the fd and holds master until DropMaster or
// Close; the caller must Close it.
//
// Open drops the master the kernel hands the first opener, and OpenMaster
// takes it back: the kernel allows that to the fd that was master, or to a
// caller with CAP_SYS_ADMIN. Another process may take master in between;
// then, as whenever another fd is master, OpenMaster fails with EBUSY.
// ErrNeedPrimary for a render node.
func OpenMaster(path string) (*Device, error) {
	d, err := Open(path)
	if err != nil {
		return nil, err
	}
	if err := d.needPrimary("OpenMaster"); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.SetMaster(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// SetMaster makes the Device's fd DRM master (SET_MASTER). A no-op when it
// already is. EBUSY while another fd is master; EACCES when the fd never
// was master and the caller lacks CAP_SYS_ADMIN. Safe for concurrent use.
func (d *Device) SetMaster() error {
	if d == nil {
		return ErrClosed
	}
	if err := d.needPrimary("SetMaster"); err != nil {
		return err
	}
	return d.locked(func(fd int) error {
		if err := uapi.DRMSetMasterCall(fd); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("drm: SetMaster on %s: %w (another process, a compositor or display server, holds the display)", d, err)
			}
			return fmt.Errorf("drm: SetMaster on %s: %w", d, err)
		}
		return nil
	})
}

// DropMaster gives up DRM master (DROP_MASTER) so that another process can
// take the display; the Device stays usable for everything that needs no
// master. A no-op when the fd is not master, and on a closed Device (the
// kernel dropped master with the fd). Safe for concurrent use.
func (d *Device) DropMaster() error {
	if d == nil || d.node != NodePrimary {
		return nil
	}
	err := d.locked(func(fd int) error { return uapi.DRMDropMasterCall(fd) })
	switch {
	case err == nil, errors.Is(err, ErrClosed), errors.Is(err, unix.EINVAL):
		return nil // EINVAL: not master
	}
	return fmt.Errorf("drm: DropMaster on %s: %w", d, err)
}

// IsMaster reports whether the Device's fd is DRM master, by the probe
// libdrm's drmIsMaster uses (AUTH_MAGIC with the never-valid magic 0: a
// master gets EINVAL, anyone else EACCES). False for a render node. Safe
// for concurrent use.
func (d *Device) IsMaster() (bool, error) {
	if d == nil {
		return false, ErrClosed
	}
	if d.node != NodePrimary {
		return false, nil
	}
	var master bool
	err := d.locked(func(fd int) error {
		err := uapi.DRMAuthMagicCall(fd, 0)
		switch {
		case errors.Is(err, unix.EINVAL):
			master = true
		case errors.Is(err, unix.EACCES):
			master = false
		case err == nil:
			return fmt.Errorf("drm: IsMaster on %s: AUTH_MAGIC(0) succeeded, which no kernel does", d)
		default:
			return fmt.Errorf("drm: IsMaster on %s: %w", d, err)
		}
		return nil
	})
	return master, err
}

// EnableAtomic sets the client capabilities UNIVERSAL_PLANES and ATOMIC on
// the Device's fd: planes of every type are listed, the atomic properties
// ("FB_ID", "CRTC_ID", "MODE_ID", "ACTIVE", ...) appear, and AtomicCommit
// works. The capabilities stay for the fd's lifetime; calling again is
// harmless. ErrNotSupported (wrapping EOPNOTSUPP) for a driver without
// atomic mode setting. Safe for concurrent use.
func (d *Device) EnableAtomic() error {
	return d.kmsOp("EnableAtomic", func(fd int) error { return d.enableAtomicLocked(fd) })
}

func (d *Device) enableAtomicLocked(fd int) error {
	for _, c := range []struct {
		cap  uint64
		name string
	}{{uapi.DRMClientCapUniversalPlanes, "UNIVERSAL_PLANES"}, {uapi.DRMClientCapAtomic, "ATOMIC"}} {
		if err := uapi.DRMSetClientCapCall(fd, c.cap, 1); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("drm: client cap %s on %s: %w (%w)", c.name, d, ErrNotSupported, err)
			}
			return fmt.Errorf("drm: client cap %s on %s: %w", c.name, d, err)
		}
	}
	d.universal = true
	return nil
}

// EnableWriteback does EnableAtomic and sets the client capability
// WRITEBACK_CONNECTORS, after which Connectors lists writeback connectors
// (vkms's "Writeback-1") with their WRITEBACK_FB_ID and
// WRITEBACK_OUT_FENCE_PTR properties. EINVAL from kernels before 4.19.
// Safe for concurrent use.
func (d *Device) EnableWriteback() error {
	return d.kmsOp("EnableWriteback", func(fd int) error {
		if err := d.enableAtomicLocked(fd); err != nil {
			return err
		}
		if err := uapi.DRMSetClientCapCall(fd, uapi.DRMClientCapWritebackConnectors, 1); err != nil {
			return fmt.Errorf("drm: client cap WRITEBACK_CONNECTORS on %s: %w", d, err)
		}
		return nil
	})
}

// AtomicFlags modify an atomic commit (DRM_MODE_ATOMIC_*, DRM_MODE_PAGE_FLIP_*).
type AtomicFlags uint32

// Atomic commit flags, with the kernel's values.
const (
	// AtomicPageFlipEvent queues a flip-complete Event (read with
	// Device.Events) for every CRTC in the commit once its new state is on
	// screen, carrying AtomicRequest.UserData.
	AtomicPageFlipEvent AtomicFlags = uapi.DRMModePageFlipEvent
	// AtomicTestOnly checks the state without applying it.
	AtomicTestOnly AtomicFlags = uapi.DRMModeAtomicTestOnly
	// AtomicNonblock returns before the state is on screen; a commit on a
	// CRTC whose previous one has not flipped yet fails with EBUSY.
	AtomicNonblock AtomicFlags = uapi.DRMModeAtomicNonblock
	// AtomicAllowModeset allows a full mode set (turning CRTCs on or off,
	// changing modes, moving connectors); without it such a state is
	// refused with EINVAL.
	AtomicAllowModeset AtomicFlags = uapi.DRMModeAtomicAllowModeset
)

// String returns the flags as "ALLOW_MODESET|NONBLOCK", or "0".
func (f AtomicFlags) String() string {
	var s []string
	for _, n := range []struct {
		f    AtomicFlags
		name string
	}{{AtomicPageFlipEvent, "PAGE_FLIP_EVENT"}, {AtomicTestOnly, "TEST_ONLY"}, {AtomicNonblock, "NONBLOCK"}, {AtomicAllowModeset, "ALLOW_MODESET"}} {
		if f&n.f != 0 {
			s = append(s, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		s = append(s, fmt.Sprintf("%#x", uint32(f)))
	}
	if len(s) == 0 {
		return "0"
	}
	return strings.Join(s, "|")
}

// ErrBadRequest means an AtomicRequest was built wrongly: a property an
// object does not have, object or property ID 0, unknown flags.
var ErrBadRequest = errors.New("drm: invalid atomic request")

// AtomicRequest collects property values for one atomic commit. Objects
// keep the order in which they were first set; setting a property twice
// keeps the last value. Mistakes (a property name the object lacks, ID 0)
// are remembered and returned by Err and AtomicCommit, so a request can be
// built without checking every call.
//
// The zero value is an empty request. An AtomicRequest is a plain value
// holding no kernel resources: nothing to close. It is not safe for
// concurrent mutation; a built request may be committed any number of
// times.
type AtomicRequest struct {
	// UserData is passed to the kernel and comes back in the flip-complete
	// Events of the commit (AtomicPageFlipEvent).
	UserData uint64

	objs   []atomicObject
	fences []propRef // out-fence properties, in SetOutFence order
	err    error
}

type atomicObject struct {
	id     uint32
	props  []uint32
	values []uint64
}

type propRef struct{ obj, prop uint32 }

// fail records the first mistake.
func (r *AtomicRequest) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
	}
}

// Set sets property prop of object obj to value.
func (r *AtomicRequest) Set(obj, prop uint32, value uint64) {
	if obj == 0 || prop == 0 {
		r.fail("object %d property %d", obj, prop)
		return
	}
	for _, f := range r.fences {
		if f == (propRef{obj, prop}) {
			r.fail("object %d property %d is an out-fence pointer: use SetOutFence", obj, prop)
			return
		}
	}
	r.set(obj, prop, value)
}

func (r *AtomicRequest) set(obj, prop uint32, value uint64) {
	for i := range r.objs {
		o := &r.objs[i]
		if o.id != obj {
			continue
		}
		for j, p := range o.props {
			if p == prop {
				o.values[j] = value
				return
			}
		}
		o.props = append(o.props, prop)
		o.values = append(o.values, value)
		return
	}
	r.objs = append(r.objs, atomicObject{id: obj, props: []uint32{prop}, values: []uint64{value}})
}

// SetProperty sets the property called name of the object p describes.
// An object without that property makes the request invalid (see Err).
func (r *AtomicRequest) SetProperty(p *Properties, name string, value uint64) {
	if p == nil {
		r.fail("property %q of a nil object", name)
		return
	}
	id := p.ID(name)
	if id == 0 {
		r.fail("%v %d has no property %q", p.Type, p.Object, name)
		return
	}
	r.Set(p.Object, id, value)
}

// SetOutFence asks for an out fence through the pointer property called
// name of the object p describes ("WRITEBACK_OUT_FENCE_PTR" of a writeback
// connector, "OUT_FENCE_PTR" of a CRTC) and returns its index in the
// fences AtomicCommit returns. The request holds no pointer: the commit
// points the property at memory the kernel writes during the call.
func (r *AtomicRequest) SetOutFence(p *Properties, name string) int {
	if p == nil || p.ID(name) == 0 {
		r.SetProperty(p, name, 0) // records the mistake
		return -1
	}
	ref := propRef{p.Object, p.ID(name)}
	for i, f := range r.fences {
		if f == ref {
			return i
		}
	}
	r.set(ref.obj, ref.prop, 0)
	r.fences = append(r.fences, ref)
	return len(r.fences) - 1
}

// SetWriteback sets a writeback connector's WRITEBACK_FB_ID to fb and asks
// for its out fence (WRITEBACK_OUT_FENCE_PTR), which signals when the
// frame has been written into fb; it returns the fence's index like
// SetOutFence. The connector must be driven by an active CRTC in the same
// state, and fb must have the mode's exact size on most drivers.
func (r *AtomicRequest) SetWriteback(conn *Properties, fb *Framebuffer) int {
	if fb == nil {
		r.fail("nil writeback framebuffer")
		return -1
	}
	r.SetProperty(conn, "WRITEBACK_FB_ID", uint64(fb.ID()))
	return r.SetOutFence(conn, "WRITEBACK_OUT_FENCE_PTR")
}

// Err returns the first mistake made building the request, wrapping
// ErrBadRequest, or nil.
func (r *AtomicRequest) Err() error { return r.err }

// Len returns the number of property values set.
func (r *AtomicRequest) Len() int {
	n := 0
	for _, o := range r.objs {
		n += len(o.props)
	}
	return n
}

// args flattens the request into the ioctl's arrays.
func (r *AtomicRequest) args(flags AtomicFlags) (uapi.DRMAtomicArgs, error) {
	if r.err != nil {
		return uapi.DRMAtomicArgs{}, r.err
	}
	if flags&^(AtomicPageFlipEvent|AtomicTestOnly|AtomicNonblock|AtomicAllowModeset) != 0 {
		return uapi.DRMAtomicArgs{}, fmt.Errorf("%w: unknown flags %v", ErrBadRequest, flags)
	}
	if flags&AtomicTestOnly != 0 && flags&AtomicPageFlipEvent != 0 {
		return uapi.DRMAtomicArgs{}, fmt.Errorf("%w: TEST_ONLY with PAGE_FLIP_EVENT (the kernel refuses it)", ErrBadRequest)
	}
	a := uapi.DRMAtomicArgs{Flags: uint32(flags), UserData: r.UserData}
	index := map[propRef]int{}
	for _, o := range r.objs {
		a.Objs = append(a.Objs, o.id)
		a.CountProps = append(a.CountProps, uint32(len(o.props)))
		for j, p := range o.props {
			index[propRef{o.id, p}] = len(a.Props)
			a.Props = append(a.Props, p)
			a.Values = append(a.Values, o.values[j])
		}
	}
	for _, f := range r.fences {
		a.OutFences = append(a.OutFences, index[f])
	}
	return a, nil
}

// AtomicCommit applies (or with AtomicTestOnly, checks) the request's state
// in one atomic commit. It returns one *Fence per SetOutFence call, in that
// order, each owned by the caller, who must Close it; an entry is nil where
// the kernel made no fence (always with AtomicTestOnly). On error no fence
// is returned.
//
// Changing what is on screen needs DRM master (ErrNotMaster otherwise) and
// EnableAtomic. The kernel says EINVAL for any state it rejects, with the
// reason only in its log (boot with drm.debug=0x10); a property ID the
// object lacks is ENOENT; EBUSY with AtomicNonblock means the previous
// commit on a CRTC has not flipped yet. ErrBadRequest for a request built
// wrongly. Safe for concurrent use (commits are serialised).
func (d *Device) AtomicCommit(r *AtomicRequest, flags AtomicFlags) ([]*Fence, error) {
	if d == nil {
		return nil, ErrClosed
	}
	if r == nil {
		r = &AtomicRequest{}
	}
	op := fmt.Sprintf("AtomicCommit(%v)", flags)
	a, err := r.args(flags)
	if err != nil {
		return nil, fmt.Errorf("drm: %s on %s: %w", op, d, err)
	}
	var fds []int
	err = d.kmsOp(op, func(fd int) error {
		for {
			fds, err = uapi.DRMModeAtomicCommit(fd, &a)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EACCES):
			return fmt.Errorf("drm: %s on %s: %w (%w: use OpenMaster)", op, d, err, ErrNotMaster)
		case errors.Is(err, unix.EINVAL):
			return fmt.Errorf("drm: %s on %s: %w (the kernel refused the state, or EnableAtomic was not called; boot with drm.debug=0x10 for its reason)", op, d, err)
		}
		return d.kmsErr(op, err)
	})
	if err != nil {
		return nil, err
	}
	fences := make([]*Fence, len(fds))
	for i, fd := range fds {
		if fd < 0 {
			continue
		}
		if fences[i], err = newFence(fd); err != nil { // closes fd
			for _, f := range fences {
				f.Close()
			}
			for _, fd := range fds[i+1:] {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
			return nil, fmt.Errorf("drm: %s on %s: %w", op, d, err)
		}
	}
	return fences, nil
}
