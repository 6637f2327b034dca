// Package drm speaks the parts of the Linux DRM interface heapd needs, over
// internal/uapi and without cgo: finding DRM devices, importing and exporting
// DMA-BUFs (PRIME), dumb buffers, KMS plane queries, framebuffers, and the
// scanout probe that answers "can this display scan out this buffer".
//
// # Discovery
//
// Discover reads /sys/class/drm (the sysfs root is injectable for tests)
// and returns one DeviceInfo per DRM device: its primary node (card*) and
// render node (renderD*) paired by their common parent device, the driver
// (DRM_IOCTL_VERSION, and the parent's sysfs driver link), the parent's
// bus and bus path, whether it does mode setting (KMS) or is render-only,
// its connectors, and whether it sits behind an IOMMU (the parent's
// iommu_group link). Devices with only a primary node (vkms, vc4) and
// render-only devices (vgem, v3d) are both covered. Card numbers follow
// probe order and change between boots: never identify a device by them.
//
// # Stable device ids
//
// DeviceInfo.ID names a device by where it sits, like /dev/dri/by-path, so
// it survives reboots and tells identical controllers apart. It is built
// from the parent device (the target of the node's "device" link) by
// walking up sysfs to /sys/devices, in the manner of udev's path_id:
//
//   - each device on a bus adds "<bus>-<device name>" in front, and
//     ancestors on the same bus directly above it are skipped (so a
//     platform device under a simple-bus gives "platform-fec00000.v3d", not
//     "platform-v3dbus-platform-fec00000.v3d");
//   - usb devices and interfaces add "usb-0:<port path>" (from "1-1.2:1.0",
//     "usb-0:1.2:1.0");
//   - virtio devices add nothing: their transport (PCI, MMIO) names them;
//   - class devices and plain directories add nothing;
//   - a parent on no bus at all gives "virtual-<name>".
//
// Examples: "platform-vkms", "platform-vgem", "platform-gpu" (vc4 on a
// Raspberry Pi 4), "platform-fec00000.v3d", "pci-0000:00:02.0",
// "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.1:1.0". Any character
// outside [A-Za-z0-9._:+-] becomes '_' and an id never starts with '.' or
// '-' (ValidID), so "scanout/<ID>" is a safe heap name. Should two DRM
// devices share one parent, the later ones (by minor number) get "-2",
// "-3": the one case where an id may change between boots. Ids follow the
// kernel's device model: a driver that moves its device to another bus
// (vkms moved from the platform bus to the faux bus in Linux 6.15) changes
// its id.
//
// # Devices, handles and buffers
//
// Open opens a node and returns a Device that owns the fd. Buffers move
// between devices as DMA-BUFs: Device.Import turns a dmabuf.Buffer into a
// Handle (PRIME fd → handle) and Device.Export turns a Handle into a new
// dmabuf.Buffer (handle → fd, O_CLOEXEC|O_RDWR). The kernel returns the same
// GEM handle when a buffer is imported twice on one fd, so each Device
// keeps a reference count per handle: every Import returns its own Handle,
// and GEM_CLOSE is issued when the last Handle for that number is closed.
//
// Dumb buffers (Device.CreateDumb, AllocateDumb) are allocated by a display
// driver for itself on its primary node: the memory it can always scan out,
// and the last-resort path Mesa's kmsro takes today.
//
// KMS queries (Device.Resources, Device.Planes with IN_FORMATS parsed by
// ParseInFormats), Device.AddFB2 and Framebuffer.Close (RMFB) need a primary
// node of a driver with mode setting: a render node gives ErrNeedPrimary and
// a render-only device gives ErrNoKMS, both wrapping ErrNotSupported.
//
// # The scanout probe
//
// Probe imports a buffer into a display device, creates a framebuffer over
// it in a given layout (XRGB8888 LINEAR sized to the buffer by default),
// checks that a plane lists the layout's format and modifier, and releases
// the framebuffer and the import again, deferred so that nothing is left
// behind on any path. The result names the step that failed (import,
// addfb2 or plane) and the errno. An import refused with EINVAL usually
// means the display has no IOMMU and needs physically contiguous memory.
//
// # Ownership, errors and concurrency
//
// Every constructor says what the caller owns: a Device, Handle,
// DumbBuffer, Framebuffer, Mapping or dmabuf.Buffer returned to the caller
// must be closed by it. Close is idempotent and nil-safe everywhere, and
// objects dropped without Close are reclaimed by a cleanup that counts a
// leak (heapd's tests fail on any). Closing a Device frees every handle and
// framebuffer made through it; exported DMA-BUFs and mappings stay valid.
// All types are safe for concurrent use; a Device serialises its ioctls.
//
// Kernel refusals are *os.SyscallError values naming the ioctl, so
// errors.Is(err, unix.EINVAL) works; the package's own conditions are the
// Err* sentinels.
//
// # Privilege
//
// Discovery reads sysfs, which needs none; Discover also opens nodes when
// it can. Render nodes are usually open to the "render" group or everyone;
// primary nodes to root, the "video" group, or the user logind gives the
// seat to. No operation here needs DRM master (Open drops master should the
// kernel hand it over on open, so a compositor can still take the display),
// and none needs CAP_SYS_ADMIN.
package drm
