// Package uevent tells heapd when display, render and heap devices come and
// go. It listens to the kernel's device events (uevents) on a
// NETLINK_KOBJECT_UEVENT socket, or, where none arrive, watches /dev with
// inotify, and hands both as the same Event type to one consumer: the
// registry, which resolves, retires and re-probes heaps.
//
// # Netlink
//
// The Listener binds multicast group 1, where the kernel broadcasts, and
// reads with recvmsg. A message counts only when its sender's port id is 0,
// which only the kernel can have: forged messages (any local process can
// send one to our port id; root can multicast to group 1) and udev's
// re-broadcasts (group 2, "libudev" format) are dropped and counted in
// Stats. The payload "ACTION@DEVPATH\0KEY=VALUE\0…" goes through Parse,
// which is pure and fuzzed; Relevant, the default filter, keeps drm card
// and render nodes (add, remove, change with HOTPLUG=1), dma_heap nodes and
// udmabuf.
//
// The kernel queues messages in the socket's receive buffer
// (DefaultReceiveBuffer, granted beyond net.core.rmem_max with
// CAP_NET_ADMIN). When it overflows the kernel drops messages and says so
// with ENOBUFS, which the Listener delivers as an ActionOverflow event: the
// consumer must then rescan, as it does at start-up.
//
// # Inotify fallback
//
// Since Linux 4.18 the kernel sends device uevents only to network
// namespaces owned by the initial user namespace; a rootless container's
// socket binds and hears nothing. Open detects that case by asking the
// kernel who owns the network namespace (NS_GET_USERNS) and, like when the
// socket cannot be created at all, falls back to inotify on /dev/dri,
// /dev/dma_heap and /dev (for udmabuf). It synthesizes add and remove
// events with the DEVNAME, device number and (from /sys/dev/char) DEVPATH
// of the node. It cannot see DRM change events (connector hot-plug), and a
// container whose /dev is a private tmpfs sees nothing at all. Listener's
// String says which mechanism is in use and why, for the start-up log;
// Config.Mechanism forces one.
//
// # Privilege
//
// None. Binding to the kernel's uevent group is open to every user, and
// the fallback needs read access to /dev. CAP_NET_ADMIN lets the receive
// buffer grow past net.core.rmem_max.
//
// # Lifetime
//
// A Listener owns its fd and one goroutine; Close releases both, unblocks
// a waiting Next, and closes the Events channel. Open it before scanning
// the existing devices, so that nothing falls between scan and events.
package uevent
