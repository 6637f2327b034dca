package drm

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// NodeType is the kind of a DRM device node.
type NodeType int

const (
	// NodePrimary is /dev/dri/card*: mode setting, dumb buffers, PRIME.
	NodePrimary NodeType = iota
	// NodeRender is /dev/dri/renderD*: rendering and PRIME only.
	NodeRender
)

// String returns "primary" or "render".
func (t NodeType) String() string {
	switch t {
	case NodePrimary:
		return "primary"
	case NodeRender:
		return "render"
	}
	return fmt.Sprintf("NodeType(%d)", int(t))
}

// MarshalText returns String().
func (t NodeType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses "primary" or "render", so DeviceInfo round-trips
// through JSON (heapctl devices -o json, the daemon's device events).
func (t *NodeType) UnmarshalText(b []byte) error {
	switch string(b) {
	case "primary":
		*t = NodePrimary
	case "render":
		*t = NodeRender
	default:
		return fmt.Errorf("drm: unknown node type %q (want primary or render)", b)
	}
	return nil
}

// Node is one device node of a DRM device.
type Node struct {
	Name  string   `json:"name"` // "card1", "renderD128"
	Path  string   `json:"path"` // "/dev/dri/card1" (Config.DevRoot + DEVNAME)
	Type  NodeType `json:"type"`
	Major uint32   `json:"major"`
	Minor uint32   `json:"minor"`
}

// Connector is a KMS connector as sysfs lists it.
type Connector struct {
	Name   string `json:"name"`             // "HDMI-A-1", "Virtual-1", "Writeback-1"
	Status string `json:"status,omitempty"` // "connected", "disconnected", "unknown"
}

// DeviceInfo describes one DRM device: the nodes of one driver instance on
// one parent device.
type DeviceInfo struct {
	// ID is the stable id derived from BusPath (see the package
	// documentation); it is unique among the devices of one Discover call
	// and contains only [A-Za-z0-9._:+-], so "scanout/<ID>" is a valid heap
	// name.
	ID string `json:"id"`
	// Driver is the DRM driver's name (DRM_IOCTL_VERSION) when a node could
	// be opened, else KernelDriver.
	Driver string `json:"driver"`
	// KernelDriver is the driver bound to the parent device (its sysfs
	// driver link): "vc4-drm", "v3d", "i915". Empty for devices no driver
	// binds, such as vgem and vkms.
	KernelDriver string `json:"kernel_driver,omitempty"`
	// Version is the DRM driver's version, nil when no node was opened.
	Version *Version `json:"version,omitempty"`
	// Parent is the parent device's sysfs path, relative to the sysfs root
	// ("devices/platform/vkms").
	Parent string `json:"parent"`
	// Subsystem is the parent device's bus: "platform", "pci", "usb", ...
	Subsystem string `json:"subsystem,omitempty"`
	// BusPath is the by-path style location of the parent device
	// ("platform-fec00000.v3d", "pci-0000:00:02.0").
	BusPath string `json:"bus_path"`
	// Primary and Render are the device's nodes; either may be nil.
	Primary *Node `json:"primary,omitempty"`
	Render  *Node `json:"render,omitempty"`
	// KMS reports mode setting: the primary node has connectors in sysfs,
	// or GETRESOURCES on it lists CRTCs. False means render-only.
	KMS bool `json:"kms"`
	// Connectors lists the KMS connectors sysfs shows.
	Connectors []Connector `json:"connectors,omitempty"`
	// IOMMUGroup is the parent device's IOMMU group ("" when it is not
	// behind an IOMMU); IOMMU reports whether it is.
	IOMMU      bool   `json:"iommu"`
	IOMMUGroup string `json:"iommu_group,omitempty"`
	// Caps are the PRIME and framebuffer capabilities of the opened node;
	// nil when none could be opened.
	Caps *Caps `json:"caps,omitempty"`
	// QueryError says why no node could be opened or queried ("" when it
	// worked or Config.NoOpen was set).
	QueryError string `json:"query_error,omitempty"`
}

// Display reports whether the device can drive a display: it has KMS and a
// primary node.
func (i *DeviceInfo) Display() bool { return i != nil && i.KMS && i.Primary != nil }

// Open opens the device's node of type t (see Open). ErrNotSupported when
// the device has no such node.
func (i *DeviceInfo) Open(t NodeType) (*Device, error) {
	var n *Node
	if i != nil && t == NodePrimary {
		n = i.Primary
	} else if i != nil {
		n = i.Render
	}
	if n == nil {
		return nil, fmt.Errorf("drm: device %s has no %v node: %w", i.id(), t, ErrNotSupported)
	}
	return Open(n.Path)
}

func (i *DeviceInfo) id() string {
	if i == nil {
		return "<nil>"
	}
	return i.ID
}

// Config says where Discover looks. A nil *Config means the defaults.
type Config struct {
	// SysfsRoot is where sysfs is mounted; "" means "/sys". Tests point it
	// at a captured tree.
	SysfsRoot string
	// DevRoot is where device nodes live; "" means "/dev".
	DevRoot string
	// NoOpen skips opening nodes: no Version, Caps or ioctl-based KMS check.
	NoOpen bool
}

func (c *Config) sysfsRoot() string {
	if c == nil || c.SysfsRoot == "" {
		return "/sys"
	}
	return c.SysfsRoot
}

func (c *Config) devRoot() string {
	if c == nil || c.DevRoot == "" {
		return "/dev"
	}
	return c.DevRoot
}

var (
	nodeNameRE      = regexp.MustCompile(`^(card|renderD)([0-9]+)$`)
	connectorNameRE = regexp.MustCompile(`^(card[0-9]+)-(.+)$`)
)

// Discover lists every DRM device under <SysfsRoot>/class/drm, sorted by
// ID. It reads sysfs and, unless cfg.NoOpen, opens each device's render node
// (or, without one, its primary node) for DRM_IOCTL_VERSION and GET_CAP, and
// asks a primary node without sysfs connectors for GETRESOURCES. Opening
// needs read-write access to the node; a node that cannot be opened is
// reported in QueryError and is not an error of Discover.
//
// A machine without DRM (no class/drm) gives no devices and no error; a
// missing or unreadable sysfs is an error. Discover opens nothing that
// outlives the call. Safe for concurrent use.
func Discover(cfg *Config) ([]DeviceInfo, error) {
	devs, err := discoverSysfs(cfg.sysfsRoot(), cfg.devRoot())
	if err != nil {
		return nil, err
	}
	if cfg == nil || !cfg.NoOpen {
		for i := range devs {
			query(&devs[i])
		}
	}
	return devs, nil
}

// sysNode is one card*/renderD* entry of class/drm.
type sysNode struct {
	node   Node
	parent string // resolved parent device path, "" without a device link
}

// discoverSysfs does the sysfs part of Discover.
func discoverSysfs(root, devRoot string) ([]DeviceInfo, error) {
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("drm: sysfs at %s: %w (is sysfs mounted?)", root, err)
	}
	classDir := filepath.Join(rootReal, "class", "drm")
	ents, err := os.ReadDir(classDir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(rootReal, "class")); err != nil {
			return nil, fmt.Errorf("drm: sysfs at %s: %w (is sysfs mounted?)", root, err)
		}
		return nil, nil // no DRM on this machine
	}
	if err != nil {
		return nil, fmt.Errorf("drm: %w", err)
	}
	var nodes []sysNode
	connectors := map[string][]Connector{} // card name -> connectors
	for _, e := range ents {
		name := e.Name()
		if m := connectorNameRE.FindStringSubmatch(name); m != nil {
			c := Connector{Name: m[2], Status: readTrim(filepath.Join(classDir, name, "status"))}
			connectors[m[1]] = append(connectors[m[1]], c)
			continue
		}
		m := nodeNameRE.FindStringSubmatch(name)
		if m == nil {
			continue // "version", "ttm", controlD*
		}
		n, err := readNode(classDir, name, devRoot)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}

	// Group the nodes by parent device.
	byParent := map[string][]sysNode{}
	var parents []string
	for _, n := range nodes {
		key := n.parent
		if key == "" {
			key = "node:" + n.node.Name // no parent: a device of its own
		}
		if _, ok := byParent[key]; !ok {
			parents = append(parents, key)
		}
		byParent[key] = append(byParent[key], n)
	}
	slices.Sort(parents)

	var devs []DeviceInfo
	for _, key := range parents {
		group := byParent[key]
		var primaries, renders []Node
		for _, n := range group {
			if n.node.Type == NodePrimary {
				primaries = append(primaries, n.node)
			} else {
				renders = append(renders, n.node)
			}
		}
		byMinor := func(a, b Node) int { return cmp.Compare(a.Minor, b.Minor) }
		slices.SortFunc(primaries, byMinor)
		slices.SortFunc(renders, byMinor)
		// One parent normally carries one DRM device. Should it carry
		// several, pair primary and render nodes in minor order.
		for i := range max(len(primaries), len(renders)) {
			d := DeviceInfo{}
			if i < len(primaries) {
				p := primaries[i]
				d.Primary = &p
				d.Connectors = connectors[p.Name]
				slices.SortFunc(d.Connectors, func(a, b Connector) int { return strings.Compare(a.Name, b.Name) })
				d.KMS = len(d.Connectors) > 0
			}
			if i < len(renders) {
				r := renders[i]
				d.Render = &r
			}
			describeParent(&d, rootReal, group[0].parent, group[0].node.Name)
			devs = append(devs, d)
		}
	}
	assignIDs(devs)
	return devs, nil
}

// readNode reads one card*/renderD* entry of class/drm.
func readNode(classDir, name, devRoot string) (sysNode, error) {
	dir := filepath.Join(classDir, name)
	n := sysNode{node: Node{Name: name, Type: NodePrimary}}
	if strings.HasPrefix(name, "renderD") {
		n.node.Type = NodeRender
	}
	n.node.Major, n.node.Minor = parseNodeDev(readTrim(filepath.Join(dir, "dev")))
	n.node.Path = filepath.Join(devRoot, parseNodeDevName(readTrim(filepath.Join(dir, "uevent")), name))
	if p, err := filepath.EvalSymlinks(filepath.Join(dir, "device")); err == nil {
		n.parent = p
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sysNode{}, fmt.Errorf("drm: %s: %w", name, err)
	}
	return n, nil
}

// parseNodeDev parses a sysfs "dev" attribute ("226:0"); 0, 0 when it is
// not "major:minor" with both numbers fitting 32 bits.
func parseNodeDev(s string) (major, minor uint32) {
	maj, mnr, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, 0
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(mnr, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return uint32(a), uint32(b)
}

// parseNodeDevName returns the DEVNAME= of a sysfs uevent file, relative
// to /dev, or "dri/"+name when there is none. A DEVNAME that is not a
// local path below the root (absolute, "." or climbing out with "..") is
// ignored, so the node path always stays under the device root.
func parseNodeDevName(uevent, name string) string {
	devName := "dri/" + name
	for line := range strings.Lines(uevent) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "DEVNAME="); ok && filepath.IsLocal(v) && filepath.Clean(v) != "." {
			devName = v
		}
	}
	return devName
}

// describeParent fills the fields that come from the parent device.
func describeParent(d *DeviceInfo, rootReal, parent, nodeName string) {
	if parent == "" {
		d.Parent = ""
		d.BusPath = "virtual-" + nodeName
		return
	}
	if rel, err := filepath.Rel(rootReal, parent); err == nil {
		d.Parent = filepath.ToSlash(rel)
	} else {
		d.Parent = parent
	}
	d.Subsystem, _ = subsystemOf(parent)
	d.KernelDriver = linkBase(filepath.Join(parent, "driver"))
	d.IOMMUGroup = linkBase(filepath.Join(parent, "iommu_group"))
	d.IOMMU = d.IOMMUGroup != ""
	d.Driver = d.KernelDriver
	d.BusPath = busPath(rootReal, parent)
}

// subsystemOf returns the name of dev's subsystem and whether it is a bus
// (its subsystem link points into /sys/bus rather than /sys/class).
func subsystemOf(dev string) (name string, bus bool) {
	target, err := os.Readlink(filepath.Join(dev, "subsystem"))
	if err != nil {
		return "", false
	}
	return filepath.Base(target), filepath.Base(filepath.Dir(target)) == "bus"
}

// busPath builds the by-path style location of dev by walking up to the
// sysfs root, in the manner of udev's path_id: each bus device adds
// "<bus>-<name>" in front, and ancestors on the same bus right above it are
// skipped. pci, platform and any other bus use their device name; usb uses
// "usb-0:<port path>"; virtio adds nothing (its PCI or MMIO transport
// names it). Class devices and plain directories add nothing.
func busPath(rootReal, dev string) string {
	devicesDir := filepath.Join(rootReal, "devices")
	var parts []string
	skip := ""
	for p := dev; strings.HasPrefix(p, devicesDir+string(filepath.Separator)); p = filepath.Dir(p) {
		sub, bus := subsystemOf(p)
		if !bus {
			skip = ""
			continue
		}
		if sub == skip {
			continue
		}
		skip = sub
		name := filepath.Base(p)
		switch sub {
		case "virtio":
		case "usb":
			if _, port, ok := strings.Cut(name, "-"); ok {
				parts = append(parts, "usb-0:"+port)
			}
		default:
			parts = append(parts, sub+"-"+name)
		}
	}
	if len(parts) == 0 {
		return "virtual-" + filepath.Base(dev)
	}
	slices.Reverse(parts)
	return strings.Join(parts, "-")
}

// ValidID reports whether s is a well-formed device id: non-empty, only
// [A-Za-z0-9._:+-], not starting with '.' or '-'.
func ValidID(s string) bool {
	if s == "" || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := range len(s) {
		if !idByte(s[i]) {
			return false
		}
	}
	return true
}

func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '+' || c == '-'
}

// sanitizeID maps a bus path to a valid id: every other character becomes
// '_', and a leading '.' or '-' is prefixed with '_'.
func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf && idByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	id := b.String()
	if id == "" || id[0] == '.' || id[0] == '-' {
		id = "_" + id
	}
	return id
}

// assignIDs sets ID from BusPath, suffixing "-2", "-3", ... to repeats (in
// the devices' order, which is by parent path, then minor), and sorts devs
// by ID.
func assignIDs(devs []DeviceInfo) {
	used := map[string]bool{}
	for i := range devs {
		base := sanitizeID(devs[i].BusPath)
		id := base
		for n := 2; used[id]; n++ {
			id = base + "-" + strconv.Itoa(n)
		}
		used[id] = true
		devs[i].ID = id
	}
	slices.SortFunc(devs, func(a, b DeviceInfo) int { return strings.Compare(a.ID, b.ID) })
}

// readTrim returns the trimmed contents of a small sysfs file, "" on error.
func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// linkBase returns the last element of the symlink target at path, "" when
// there is no such link.
func linkBase(path string) string {
	t, err := os.Readlink(path)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}
