package drm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test with errors.Is; errors from the kernel also match
// their errno (errors.Is(err, unix.EINVAL)).
var (
	// ErrClosed means the Device (or Handle, Framebuffer) was closed.
	ErrClosed = errors.New("drm: closed")
	// ErrNotSupported means the device or kernel does not offer the
	// operation. ErrNoKMS and ErrNeedPrimary wrap it.
	ErrNotSupported = errors.New("drm: not supported")
	// ErrNotDRM means a path or fd is not a DRM device node.
	ErrNotDRM = errors.New("drm: not a DRM device node")
	// ErrNoKMS means a mode-setting operation (KMS queries, framebuffers,
	// the scanout probe) was asked of a device without mode setting, a
	// render-only device such as vgem or v3d.
	ErrNoKMS = fmt.Errorf("%w: device has no KMS (render-only)", ErrNotSupported)
	// ErrNeedPrimary means the operation (dumb buffers, KMS) works only on a
	// primary node (card*) and the Device is a render node (renderD*).
	ErrNeedPrimary = fmt.Errorf("%w: needs the primary node (card*), not a render node", ErrNotSupported)
	// ErrEmulated means an emulated (memfd) buffer was passed where a device
	// must import memory: no device can import one.
	ErrEmulated = errors.New("drm: emulated buffer: CPU only, not importable by any device")
	// ErrWrongDevice means a Handle or Framebuffer of one Device was passed
	// to another.
	ErrWrongDevice = errors.New("drm: handle belongs to another device")
	// ErrBadLayout means a Layout is incomplete or does not fit its buffer.
	ErrBadLayout = errors.New("drm: invalid framebuffer layout")
	// ErrBadBlob means an IN_FORMATS blob could not be parsed.
	ErrBadBlob = errors.New("drm: malformed IN_FORMATS blob")
)
