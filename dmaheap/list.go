package dmaheap

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Backing says what memory a heap hands out, as far as user space can tell.
type Backing int

// Backings.
const (
	// BackingUnknown is a heap the package cannot classify (a vendor heap).
	BackingUnknown Backing = iota
	// BackingSystem is pages from the buddy allocator: not physically
	// contiguous.
	BackingSystem
	// BackingCMA is a Contiguous Memory Allocator area: physically
	// contiguous.
	BackingCMA
)

// String returns "unknown", "system" or "cma".
func (b Backing) String() string {
	switch b {
	case BackingUnknown:
		return "unknown"
	case BackingSystem:
		return "system"
	case BackingCMA:
		return "cma"
	}
	return fmt.Sprintf("Backing(%d)", int(b))
}

// Info describes one entry of /dev/dma_heap (or a heap sysfs knows that has
// no node). It holds no fd and is a plain value.
type Info struct {
	// Name is the entry's name in /dev/dma_heap: the kernel's heap name, or
	// the alias name for a symbolic link.
	Name string
	// Path is the node's path; empty when sysfs lists a heap that has no
	// node.
	Path string
	// AliasOf is, for a symbolic link, the name of the heap it points at
	// (vidbuf_cached -> "linux,cma"); empty for a kernel heap. LinkTarget is
	// the raw link text.
	AliasOf    string
	LinkTarget string
	// Major and Minor are the node's device number (following a link).
	Major, Minor uint32
	// Backing is what memory the heap hands out; BackingWhy says how that
	// was decided.
	Backing    Backing
	BackingWhy string
	// Accessible reports whether this process may open the node for reading
	// (access(2) with R_OK, which uses the real user and group IDs).
	Accessible bool
	// UID, GID, Owner and Group are the node's owner and group (names empty
	// when they cannot be looked up); Mode is its mode (type and
	// permission bits).
	UID, GID     uint32
	Owner, Group string
	Mode         fs.FileMode
	// Problems lists inconsistencies found while listing: a node whose
	// device number differs from sysfs, a node sysfs does not know, a link
	// that points nowhere, a heap with no node.
	Problems []string
}

// Contiguous reports whether the heap is known to hand out physically
// contiguous memory.
func (i Info) Contiguous() bool { return i.Backing == BackingCMA }

// Alias reports whether the entry is a symbolic link to another heap.
func (i Info) Alias() bool { return i.LinkTarget != "" }

// List returns every heap of the running kernel, sorted by name. It is
// (*Config)(nil).List: it opens no heap, keeps no fd and is safe for
// concurrent use.
func List() ([]Info, error) { return (*Config)(nil).List() }

// List returns every entry of DevDir/dma_heap, cross-checked with
// SysDir/class/dma_heap, plus any heap sysfs knows that has no node; sorted
// by name. A kernel without heaps gives an empty list and no error. List
// opens no heap and keeps no fd. Safe for concurrent use.
func (c *Config) List() ([]Info, error) {
	sysHeaps, err := c.sysHeaps()
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(c.heapDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dmaheap: list heaps: %w", err)
	}
	cmdline := c.readCmdline()
	var out []Info
	seen := map[string]bool{}
	for _, e := range ents {
		seen[e.Name()] = true
		out = append(out, c.describe(e.Name(), sysHeaps, cmdline))
	}
	for name := range sysHeaps {
		if seen[name] {
			continue
		}
		b, why := c.classify(name, cmdline)
		out = append(out, Info{
			Name:       name,
			Backing:    b,
			BackingWhy: why,
			Problems: []string{fmt.Sprintf("the kernel has heap %q (%s) but %s does not exist: devtmpfs not mounted on %s, or udev removed the node",
				name, filepath.Join(c.classDir(), name), c.nodePath(name), c.devDir())},
		})
	}
	// Aliases take the backing of their target.
	byName := map[string]*Info{}
	for i := range out {
		byName[out[i].Name] = &out[i]
	}
	for i := range out {
		in := &out[i]
		if !in.Alias() {
			continue
		}
		t, ok := byName[in.AliasOf]
		switch {
		case !ok:
			in.Problems = append(in.Problems, fmt.Sprintf("link %s -> %s points at no heap", in.Path, in.LinkTarget))
		case t.Alias():
			in.Problems = append(in.Problems, fmt.Sprintf("link %s -> %s points at another link", in.Path, in.LinkTarget))
		default:
			in.Backing = t.Backing
			in.BackingWhy = fmt.Sprintf("link to heap %q: %s", t.Name, t.BackingWhy)
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Names returns the names of the listed heaps, aliases included, in order.
// A nil or empty listing gives an empty slice.
func Names(heaps []Info) []string {
	names := make([]string, 0, len(heaps))
	for _, h := range heaps {
		names = append(names, h.Name)
	}
	return names
}

// sysHeaps maps the heaps in SysDir/class/dma_heap to the text of their dev
// attribute ("" when it cannot be read).
func (c *Config) sysHeaps() (map[string]string, error) {
	ents, err := os.ReadDir(c.classDir())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dmaheap: list heaps: %w", err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		dev, _ := os.ReadFile(filepath.Join(c.classDir(), e.Name(), "dev"))
		m[e.Name()] = strings.TrimSpace(string(dev))
	}
	return m, nil
}

// describe builds the Info of one entry of the heap directory.
func (c *Config) describe(name string, sysHeaps map[string]string, cmdline string) Info {
	path := c.nodePath(name)
	in := Info{Name: name, Path: path}
	lfi, err := os.Lstat(path)
	if err != nil {
		in.Problems = append(in.Problems, err.Error())
		return in
	}
	if lfi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			in.Problems = append(in.Problems, err.Error())
			return in
		}
		in.LinkTarget = target
		in.AliasOf = c.linkHeap(target)
	} else {
		in.Backing, in.BackingWhy = c.classify(name, cmdline)
	}

	fi, err := os.Stat(path) // follows a link: what open(2) would open
	if err != nil {
		in.Problems = append(in.Problems, err.Error())
		return in
	}
	ns := statNode(fi)
	in.Mode, in.UID, in.GID = fi.Mode(), ns.uid, ns.gid
	in.Owner, in.Group = lookupUser(ns.uid), lookupGroup(ns.gid)
	in.Accessible = canRead(path)
	haveDev := false
	switch {
	case fi.Mode()&fs.ModeCharDevice != 0:
		in.Major, in.Minor, haveDev = ns.major, ns.minor, true
	case fi.Mode().IsRegular() && c.regularNodes():
		if content, err := os.ReadFile(path); err == nil {
			in.Major, in.Minor, haveDev = parseDevNum(string(bytes.TrimSpace(content)))
		}
	default:
		in.Problems = append(in.Problems, fmt.Sprintf("%s is %s, not a character device", path, describeMode(fi.Mode())))
		return in
	}

	if in.Alias() {
		return in // the target's own entry is cross-checked
	}
	sysDev, ok := sysHeaps[name]
	switch {
	case !ok:
		in.Problems = append(in.Problems, fmt.Sprintf("%s has no %s: not a heap of the running kernel (a stale or hand-made node?)",
			path, filepath.Join(c.classDir(), name)))
	case sysDev == "":
		in.Problems = append(in.Problems, fmt.Sprintf("cannot read %s", filepath.Join(c.classDir(), name, "dev")))
	default:
		maj, mnr, ok := parseDevNum(sysDev)
		if !ok {
			in.Problems = append(in.Problems, fmt.Sprintf("%s holds %q, not major:minor", filepath.Join(c.classDir(), name, "dev"), sysDev))
		} else if haveDev && (maj != in.Major || mnr != in.Minor) {
			in.Problems = append(in.Problems, fmt.Sprintf("node %s is %d:%d but the kernel's heap %q is %s: stale node (re-run udev or reboot)",
				path, in.Major, in.Minor, name, sysDev))
		}
	}
	return in
}

// linkHeap returns the heap name a link in the heap directory points at: the
// base name when the target lies in the heap directory (relative, as udev
// makes them, or absolute), else the target as written.
func (c *Config) linkHeap(target string) string {
	if !filepath.IsAbs(target) {
		target = filepath.Join(c.heapDir(), target)
	}
	target = filepath.Clean(target)
	dir := filepath.Dir(target)
	if dir == filepath.Clean(c.heapDir()) || dir == filepath.Join(DefaultDevDir, "dma_heap") {
		return filepath.Base(target)
	}
	return target
}

// Known heap names and what they are.
const (
	whySystem         = "the system heap: pages from the buddy allocator, not physically contiguous"
	whySystemUncached = "the uncached system heap: pages from the buddy allocator, not physically contiguous"
	whyDefaultRegion  = "the default CMA area under its stable name (Linux 6.17 and later)"
	whyReserved       = "the default CMA area when it comes from cma= on the kernel command line or CONFIG_CMA_SIZE_* (its name before Linux 6.17, a legacy duplicate of default_cma_region after)"
	whyDTDefault      = "the default CMA area named after its device-tree node (its name before Linux 6.17, a legacy or per-region duplicate of default_cma_region after)"
)

// classify decides a kernel heap's backing from its name and from what the
// kernel publishes about CMA areas (see the package documentation).
func (c *Config) classify(name, cmdline string) (Backing, string) {
	switch name {
	case "system":
		return BackingSystem, whySystem
	case "system-uncached":
		return BackingSystem, whySystemUncached
	case "default_cma_region":
		return BackingCMA, whyDefaultRegion
	case "reserved":
		if arg := cmaArg(cmdline); arg != "" {
			return BackingCMA, whyReserved + "; this kernel was booted with " + arg
		}
		return BackingCMA, whyReserved
	case "linux,cma", "default-pool":
		return BackingCMA, whyDTDefault
	}
	if fi, err := os.Stat(filepath.Join(c.cmaSysDir(), name)); err == nil && fi.IsDir() {
		return BackingCMA, fmt.Sprintf("a CMA area named %q exists (%s)", name, c.cmaSysDir())
	}
	if ok, why := c.reusablePool(name); ok {
		return BackingCMA, why
	}
	return BackingUnknown, fmt.Sprintf("not a heap name heapd knows, and neither %s nor a reusable shared-dma-pool node %s exists: a vendor heap?",
		filepath.Join(c.cmaSysDir(), name), filepath.Join(c.reservedMemDir(), name))
}

// reusablePool reports whether the device tree has a reserved-memory node
// called name that is compatible with "shared-dma-pool" and "reusable": the
// kernel backs such a region with CMA and, from 6.19, gives it its own heap.
func (c *Config) reusablePool(name string) (bool, string) {
	dir := filepath.Join(c.reservedMemDir(), name)
	compat, err := os.ReadFile(filepath.Join(dir, "compatible"))
	if err != nil {
		return false, ""
	}
	if !slices.Contains(strings.Split(string(compat), "\x00"), "shared-dma-pool") {
		return false, ""
	}
	if _, err := os.Stat(filepath.Join(dir, "reusable")); err != nil {
		return false, ""
	}
	return true, fmt.Sprintf("a reusable shared-dma-pool reserved-memory region (%s): the kernel backs it with CMA and, from Linux 6.19, gives it its own heap", dir)
}

func (c *Config) readCmdline() string {
	b, err := os.ReadFile(c.cmdlinePath())
	if err != nil {
		return ""
	}
	return string(b)
}

// cmaArg returns the cma= argument of a kernel command line, or "".
func cmaArg(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "cma=") {
			return f
		}
	}
	return ""
}

// parseDevNum parses "major:minor".
func parseDevNum(s string) (major, minor uint32, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(ma), uint32(mi), true
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "a " + m.Type().String() + " file"
}

func lookupUser(uid uint32) string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return ""
	}
	return u.Username
}

func lookupGroup(gid uint32) string {
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	if err != nil {
		return ""
	}
	return g.Name
}
