package uevent

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// openSource applies the Mechanism rule of Open. c has its defaults set.
func openSource(c *Config) (source, error) {
	switch c.Mechanism {
	case Netlink:
		return openNetlink(c.ReceiveBuffer)
	case Inotify:
		return openInotify(c.DevDir, c.SysDir, "requested")
	case Auto:
	default:
		return nil, fmt.Errorf("uevent: unknown mechanism %v", c.Mechanism)
	}
	why := netnsWithoutUevents()
	if why == "" {
		s, err := openNetlink(c.ReceiveBuffer)
		if err == nil {
			return s, nil
		}
		why = "no uevents: " + err.Error()
	}
	s, err := openInotify(c.DevDir, c.SysDir, why)
	if err != nil {
		return nil, fmt.Errorf("%w (and %s)", err, why)
	}
	return s, nil
}

// initUserNSIno is the inode number of the initial user namespace's nsfs
// file, fixed by the kernel since Linux 3.8 (PROC_USER_INIT_INO).
const initUserNSIno = 0xEFFFFFFD

// netnsWithoutUevents returns why this process's network namespace gets no
// device uevents, or "" when it does or when that cannot be told.
//
// Since Linux 4.18 (commit a3498436b3a0, "netns: restrict uevents") the
// kernel broadcasts uevents of devices (which belong to no network
// namespace) only on the uevent sockets of network namespaces owned by the
// initial user namespace. A socket elsewhere binds fine and hears nothing,
// so asking the kernel is the only way to know: NS_GET_USERNS on our
// network namespace gives its owner, and the initial user namespace has a
// fixed inode number. When the owner is an ancestor of our own user
// namespace (a rootless container sharing the host's network) the ioctl
// fails with EPERM; the owner is then almost always the initial namespace,
// and netlink is tried. Kernels before 4.9 lack the ioctl (ENOTTY) and
// broadcast to every namespace before 4.18 anyway.
func netnsWithoutUevents() string {
	// The calling thread's namespace, which its sockets will be in (a
	// thread may have left the process's with setns).
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "" // no /proc, or a kernel without CONFIG_NET_NS: cannot tell
	}
	defer unix.Close(fd)
	owner, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		return ""
	}
	defer unix.Close(owner)
	var st unix.Stat_t
	if err := unix.Fstat(owner, &st); err != nil {
		return ""
	}
	if st.Ino == initUserNSIno {
		return ""
	}
	return "no uevents: the network namespace belongs to a user namespace other than the initial one, and the kernel sends device uevents only to network namespaces of the initial user namespace"
}
