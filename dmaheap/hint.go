package dmaheap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// openError turns a failed open(2) of a heap node into an *Error that says
// what to do.
func (c *Config) openError(name, path string, err error) error {
	e := &Error{Op: "open", Heap: name, Err: err}
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		e.Kind = ErrNotExist
		heaps, lerr := c.List()
		if lerr != nil {
			heaps = nil
		}
		e.Detail = c.missingDetail(name, heaps)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		e.Kind = ErrPermission
		e.Detail = permissionDetail(name, path)
	}
	return e
}

// missingDetail says which heaps exist and what the missing one needs.
func (c *Config) missingDetail(name string, heaps []Info) string {
	var parts []string
	if len(heaps) == 0 {
		parts = append(parts, fmt.Sprintf("this system has no DMA-BUF heaps at all (%s is empty or missing): the kernel needs CONFIG_DMABUF_HEAPS with CONFIG_DMABUF_HEAPS_SYSTEM and/or CONFIG_DMABUF_HEAPS_CMA, and devtmpfs mounted on %s",
			c.heapDir(), c.devDir()))
	} else {
		var names []string
		for _, h := range heaps {
			if h.Alias() {
				names = append(names, h.Name+" -> "+h.LinkTarget)
			} else {
				names = append(names, h.Name)
			}
		}
		parts = append(parts, "heaps present: "+strings.Join(names, ", "))
	}
	switch name {
	case "system", "system-uncached":
		parts = append(parts, "the system heap needs CONFIG_DMABUF_HEAPS_SYSTEM")
	case "default_cma_region", "reserved", "linux,cma", "default-pool":
		parts = append(parts, "a CMA heap needs CONFIG_DMABUF_HEAPS_CMA and a CMA area (cma=<size> on the kernel command line, CONFIG_CMA_SIZE_MBYTES, or a reusable shared-dma-pool reserved-memory region)")
		if r, err := ResolveCMA(heaps); err == nil {
			parts = append(parts, fmt.Sprintf("this kernel calls its CMA heap %q: the name changed across kernels (reserved, linux,cma or default-pool before 6.17; default_cma_region from 6.17, the old name only with CONFIG_DMABUF_HEAPS_CMA_LEGACY), so use ResolveCMA rather than a fixed name",
				r.Heap.Name))
		}
	case "vidbuf_cached":
		parts = append(parts, "vidbuf_cached is a link made by Raspberry Pi OS's udev rules (to system on a Pi 5, to linux,cma on older Pis); elsewhere use ResolveCMA for contiguous memory or system otherwise")
	default:
		parts = append(parts, fmt.Sprintf("a heap named %q needs the driver that registers it; from Linux 6.19 a CMA heap of that name needs a reusable shared-dma-pool reserved-memory node called %q in the device tree", name, name))
	}
	return strings.Join(parts, "; ")
}

// permissionDetail names the node's owner, group and mode and the ways to
// get access.
func permissionDetail(name, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Sprintf("cannot stat %s: %v", path, err)
	}
	ns := statNode(fi)
	owner, group := lookupUser(ns.uid), lookupGroup(ns.gid)
	if owner == "" {
		owner = fmt.Sprint(ns.uid)
	}
	if group == "" {
		group = fmt.Sprint(ns.gid)
	}
	var fixes []string
	if fi.Mode().Perm()&0o040 != 0 && ns.gid != 0 {
		fixes = append(fixes, fmt.Sprintf("add the user to group %q (then log in again)", group))
	}
	fixes = append(fixes,
		fmt.Sprintf(`install a udev rule such as SUBSYSTEM=="dma_heap", KERNEL=="%s", GROUP="video", MODE="0660" and add the user to that group`, name),
		"or allocate through the heapd daemon, which hands out buffers without opening the node to programs")
	return fmt.Sprintf("%s is %s:%s %s and this process (uid %d, gid %d) may not read it; to fix: %s",
		path, owner, group, modeString(fi.Mode()), os.Getuid(), os.Getgid(), strings.Join(fixes, ", "))
}

// modeString renders a node's mode like ls -l does ("crw-rw----").
func modeString(m fs.FileMode) string {
	t := "-"
	switch {
	case m&fs.ModeCharDevice != 0:
		t = "c"
	case m&fs.ModeDevice != 0:
		t = "b"
	case m.IsDir():
		t = "d"
	case m&fs.ModeSymlink != 0:
		t = "l"
	}
	return t + m.Perm().String()[1:]
}
