package drm

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// loadTree builds the sysfs tree stored in testdata/sysfs/<name>.txtar in a
// temporary directory and returns its root. The archive holds sections
// "-- path --" (a file, the lines up to the next header), "-- path/ --" (an
// empty directory) and "-- path -> target --" (a symlink); text before the
// first header is a comment.
func loadTree(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "sysfs", name+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var file *strings.Builder
	var filePath string
	flush := func() {
		if file != nil {
			if err := os.WriteFile(filePath, []byte(file.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			file = nil
		}
	}
	for line := range strings.Lines(string(data)) {
		hdr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "-- ")
		if ok {
			hdr, ok = strings.CutSuffix(hdr, " --")
		}
		if !ok {
			if file != nil {
				file.WriteString(line)
			}
			continue
		}
		flush()
		path, target, isLink := strings.Cut(hdr, " -> ")
		full := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(path, "/")))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case isLink:
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(path, "/"):
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			file, filePath = new(strings.Builder), full
		}
	}
	flush()
	return root
}

func node(name string, typ NodeType, minor uint32) *Node {
	return &Node{Name: name, Path: "/dev/dri/" + name, Type: typ, Major: 226, Minor: minor}
}

func TestDiscoverSysfs(t *testing.T) {
	vm := []DeviceInfo{
		{
			ID: "platform-vgem", Parent: "devices/platform/vgem", Subsystem: "platform", BusPath: "platform-vgem",
			Primary: node("card0", NodePrimary, 0), Render: node("renderD128", NodeRender, 128),
		},
		{
			ID: "platform-vkms", Parent: "devices/platform/vkms", Subsystem: "platform", BusPath: "platform-vkms",
			Primary: node("card1", NodePrimary, 1), KMS: true,
			Connectors: []Connector{{"Virtual-1", "unknown"}, {"Writeback-1", "unknown"}},
		},
	}
	swapped := []DeviceInfo{vm[0], vm[1]}
	swapped[0].Primary = node("card1", NodePrimary, 1)
	swapped[1].Primary = node("card0", NodePrimary, 0)

	usb := "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:"
	usbParent := "devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb1/1-1/"
	for _, tc := range []struct {
		tree string
		want []DeviceInfo
	}{
		{"vm", vm},
		{"vm-swapped", swapped},
		{"pi4", []DeviceInfo{
			{
				ID: usb + "1.1:1.0", Driver: "gud", KernelDriver: "gud", Subsystem: "usb",
				Parent: usbParent + "1-1.1/1-1.1:1.0", BusPath: usb + "1.1:1.0",
				Primary: node("card2", NodePrimary, 2), KMS: true, Connectors: []Connector{{"USB-1", "connected"}},
			},
			{
				ID: usb + "1.2:1.0", Driver: "gud", KernelDriver: "gud", Subsystem: "usb",
				Parent: usbParent + "1-1.2/1-1.2:1.0", BusPath: usb + "1.2:1.0",
				Primary: node("card3", NodePrimary, 3), KMS: true, Connectors: []Connector{{"USB-2", "connected"}},
			},
			{
				ID: "platform-fec00000.v3d", Driver: "v3d", KernelDriver: "v3d", Subsystem: "platform",
				Parent: "devices/platform/v3dbus/fec00000.v3d", BusPath: "platform-fec00000.v3d",
				Primary: node("card0", NodePrimary, 0), Render: node("renderD128", NodeRender, 128),
			},
			{
				ID: "platform-gpu", Driver: "vc4-drm", KernelDriver: "vc4-drm", Subsystem: "platform",
				Parent: "devices/platform/gpu", BusPath: "platform-gpu",
				Primary: node("card1", NodePrimary, 1), KMS: true,
				Connectors: []Connector{{"HDMI-A-1", "connected"}, {"HDMI-A-2", "disconnected"}, {"Writeback-1", "unknown"}},
			},
		}},
		{"pc", []DeviceInfo{
			{
				ID: "pci-0000:00:02.0", Driver: "i915", KernelDriver: "i915", Subsystem: "pci",
				Parent: "devices/pci0000:00/0000:00:02.0", BusPath: "pci-0000:00:02.0",
				Primary: node("card1", NodePrimary, 1), Render: node("renderD128", NodeRender, 128), KMS: true,
				Connectors: []Connector{{"DP-1", "disconnected"}, {"HDMI-A-1", "disconnected"}, {"eDP-1", "connected"}},
				IOMMU:      true, IOMMUGroup: "0",
			},
			{
				ID: "pci-0000:00:04.0", Driver: "virtio_gpu", KernelDriver: "virtio_gpu", Subsystem: "virtio",
				Parent: "devices/pci0000:00/0000:00:04.0/virtio1", BusPath: "pci-0000:00:04.0",
				Primary: node("card0", NodePrimary, 0), Render: node("renderD129", NodeRender, 129), KMS: true,
				Connectors: []Connector{{"Virtual-1", "connected"}},
			},
		}},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			root := loadTree(t, tc.tree)
			got, err := Discover(&Config{SysfsRoot: root, DevRoot: "/dev", NoOpen: true})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Discover (-want +got):\n%s", diff)
			}
			for _, d := range got {
				if !ValidID(d.ID) || !ValidID("x"+d.ID) {
					t.Errorf("id %q is not valid", d.ID)
				}
			}
		})
	}
}

// Opening nodes that do not exist is reported per device, not as an error.
func TestDiscoverOpenFailures(t *testing.T) {
	root := loadTree(t, "vm")
	devRoot := t.TempDir()
	got, err := Discover(&Config{SysfsRoot: root, DevRoot: devRoot})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d devices, want 2", len(got))
	}
	for _, d := range got {
		if d.Version != nil || d.Caps != nil {
			t.Errorf("%s: Version/Caps set without a node", d.ID)
		}
		if !strings.Contains(d.QueryError, devRoot) || !strings.Contains(d.QueryError, "no such file") {
			t.Errorf("%s: QueryError = %q, want the missing node named", d.ID, d.QueryError)
		}
	}
	// vgem: both nodes tried, render first.
	if q := got[0].QueryError; strings.Index(q, "renderD128") > strings.Index(q, "card0") {
		t.Errorf("QueryError = %q: render node should be tried first", q)
	}
}

func TestDiscoverNoDRM(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "class"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Discover(&Config{SysfsRoot: root})
	if err != nil || got != nil {
		t.Errorf("Discover without class/drm = %v, %v; want nil, nil", got, err)
	}
	if _, err := Discover(&Config{SysfsRoot: filepath.Join(root, "missing")}); err == nil {
		t.Error("Discover without sysfs: no error")
	}
	if _, err := Discover(&Config{SysfsRoot: filepath.Join(root, "class")}); err == nil {
		t.Error("Discover on a directory without class/: no error")
	}
}

// The JSON field names are part of the heapctl -o json output.
func TestDeviceInfoJSON(t *testing.T) {
	info := DeviceInfo{
		ID: "platform-vkms", Driver: "vkms", BusPath: "platform-vkms", Parent: "devices/platform/vkms",
		Primary: node("card1", NodePrimary, 1), KMS: true,
		Version: &Version{Major: 1, Name: "vkms", Date: "20180514", Desc: "Virtual Kernel Mode Setting"},
		Caps:    &Caps{PrimeImport: true, PrimeExport: true, DumbBuffer: true, AddFB2Modifiers: true},
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"platform-vkms","driver":"vkms","version":{"major":1,"minor":0,"patch":0,"name":"vkms","date":"20180514","desc":"Virtual Kernel Mode Setting"},` +
		`"parent":"devices/platform/vkms","bus_path":"platform-vkms","primary":{"name":"card1","path":"/dev/dri/card1","type":"primary","major":226,"minor":1},` +
		`"kms":true,"iommu":false,"caps":{"prime_import":true,"prime_export":true,"dumb_buffer":true,"addfb2_modifiers":true}}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
}

func TestIDs(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		valid    bool
	}{
		{"platform-vkms", "platform-vkms", true},
		{"pci-0000:00:02.0", "pci-0000:00:02.0", true},
		{"platform-a/b c", "platform-a_b_c", false},
		{".hidden", "_.hidden", false},
		{"-x", "_-x", false},
		{"", "_", false},
		{"ünï", "_n_", false},
	} {
		if got := sanitizeID(tc.in); got != tc.want {
			t.Errorf("sanitizeID(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := ValidID(tc.in); got != tc.valid {
			t.Errorf("ValidID(%q) = %v, want %v", tc.in, got, tc.valid)
		}
		if !ValidID(sanitizeID(tc.in)) {
			t.Errorf("sanitizeID(%q) = %q is not valid", tc.in, sanitizeID(tc.in))
		}
	}
}

// Two DRM devices whose bus paths collide get suffixed ids in a stable order.
func TestAssignIDsCollisions(t *testing.T) {
	devs := []DeviceInfo{{BusPath: "platform-x"}, {BusPath: "platform-x"}, {BusPath: "platform-x-2"}, {BusPath: "a b"}}
	assignIDs(devs)
	var got []string
	for _, d := range devs {
		got = append(got, d.ID)
	}
	want := []string{"a_b", "platform-x", "platform-x-2", "platform-x-2-2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
}

func TestDeviceInfoOpenMissingNode(t *testing.T) {
	var nilInfo *DeviceInfo
	for _, tc := range []struct {
		info *DeviceInfo
		typ  NodeType
	}{
		{nilInfo, NodePrimary},
		{&DeviceInfo{ID: "platform-vkms", Primary: node("card1", NodePrimary, 1)}, NodeRender},
		{&DeviceInfo{ID: "x", Render: node("renderD128", NodeRender, 128)}, NodePrimary},
	} {
		if d, err := tc.info.Open(tc.typ); !errors.Is(err, ErrNotSupported) {
			d.Close()
			t.Errorf("Open(%v) on %+v: err = %v, want ErrNotSupported", tc.typ, tc.info, err)
		}
	}
}

func TestDeviceInfoJSONRoundTrip(t *testing.T) {
	in := DeviceInfo{ID: "platform-vkms", Driver: "vkms", KMS: true,
		Primary: &Node{Name: "card1", Path: "/dev/dri/card1", Type: NodePrimary, Major: 226, Minor: 1},
		Render:  &Node{Name: "renderD128", Path: "/dev/dri/renderD128", Type: NodeRender, Major: 226, Minor: 128}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out DeviceInfo
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	var nt NodeType
	if err := nt.UnmarshalText([]byte("bogus")); err == nil {
		t.Error("bogus node type accepted")
	}
	var pt PlaneType
	if err := pt.UnmarshalText([]byte("cursor")); err != nil || pt != PlaneCursor {
		t.Errorf("plane type: %v %v", pt, err)
	}
}
