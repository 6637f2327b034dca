package uevent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

// modulesEnv names the directory of the running kernel's .ko files; the VM
// tier's /init sets it (test/vm/internal/vmproto.EnvModules).
const modulesEnv = testutil.ModulesEnv

// Unloading and reloading vkms and vgem makes the kernel remove and add
// their DRM nodes: netlink delivers the drm remove and add events of every
// card and render node, and the inotify fallback, watching the real /dev,
// reports the same nodes with the same device numbers and paths. Each
// module is loaded again with the parameters it had, so the packages that
// test after this one find the devices /init set up.
func TestIntegrationModuleHotplug(t *testing.T) {
	testutil.NeedRoot(t)
	modDir := os.Getenv(modulesEnv)
	if modDir == "" {
		testutil.Missing(t, modulesEnv+" unset: this test loads and unloads vkms and vgem in the VM tier (make vmtest PKG=./internal/uevent)")
	}
	for _, driver := range []string{"vkms", "vgem"} {
		t.Run(driver, func(t *testing.T) { testModuleHotplug(t, modDir, driver) })
	}
}

// drmNode is a card or render node of a driver, from sysfs.
type drmNode struct {
	name         string // "card1", "renderD128"
	major, minor uint32
	devPath      string
}

// driverNodes lists the DRM nodes whose device is the platform device of
// driver (vkms and vgem name theirs after themselves).
func driverNodes(t *testing.T, driver string) []drmNode {
	t.Helper()
	ents, err := os.ReadDir("/sys/class/drm")
	if err != nil {
		return nil
	}
	var out []drmNode
	for _, e := range ents {
		if !isDRMNodeName(e.Name()) {
			continue
		}
		dir := filepath.Join("/sys/class/drm", e.Name())
		dev, err := os.Readlink(filepath.Join(dir, "device"))
		if err != nil || filepath.Base(dev) != driver {
			continue
		}
		n := drmNode{name: e.Name()}
		data, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscanf(string(data), "%d:%d", &n.major, &n.minor); err != nil {
			t.Fatalf("%s/dev: %q", dir, data)
		}
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			t.Fatal(err)
		}
		n.devPath = strings.TrimPrefix(real, "/sys")
		out = append(out, n)
	}
	return out
}

// nodeEvent is what the two mechanisms must agree on.
type nodeEvent struct {
	Action       Action
	Subsystem    string
	DevName      string
	Major, Minor uint32
	DevPath      string
}

func asNodeEvent(e Event) nodeEvent {
	return nodeEvent{e.Action, e.Subsystem, e.DevName, e.Major, e.Minor, e.DevPath}
}

// collect reads n add or remove events from l, sorted by DevName. Change
// events in between (vkms announces its connectors with HOTPLUG=1) are
// counted in *changes.
func collect(t *testing.T, l *Listener, n int, changes *int) []nodeEvent {
	t.Helper()
	var got []nodeEvent
	for range n {
		ev := waitEvent(t, l, 20*time.Second, func(e Event) bool { return e.Action != ActionChange }, func(e Event) {
			if changes != nil && e.Env["HOTPLUG"] == "1" {
				*changes++
			}
		})
		got = append(got, asNodeEvent(ev))
	}
	slices.SortFunc(got, func(a, b nodeEvent) int { return strings.Compare(a.DevName, b.DevName) })
	return got
}

func wantEvents(a Action, nodes []drmNode) []nodeEvent {
	var out []nodeEvent
	for _, n := range nodes {
		out = append(out, nodeEvent{a, "drm", "dri/" + n.name, n.major, n.minor, n.devPath})
	}
	slices.SortFunc(out, func(a, b nodeEvent) int { return strings.Compare(a.DevName, b.DevName) })
	return out
}

func testModuleHotplug(t *testing.T, modDir, driver string) {
	ko := filepath.Join(modDir, driver+".ko")
	testutil.NeedPath(t, ko, "kernel built without CONFIG_DRM_"+strings.ToUpper(driver)+"=m?")
	testutil.NeedPath(t, filepath.Join("/sys/module", driver), "/init did not load "+driver)
	before := driverNodes(t, driver)
	if len(before) == 0 {
		testutil.Missing(t, driver+" has no DRM node")
	}
	params := testutil.ModuleParams(driver)
	t.Logf("%s (%s) has %v", driver, params, before)

	nl := openNetlinkOrSkip(t, nil)
	ino, err := Open(&Config{Mechanism: Inotify})
	if err != nil {
		t.Fatal(err)
	}
	defer ino.Close()
	raw := openRaw(t)
	t.Cleanup(func() {
		// Leave the module loaded whatever happened.
		if _, err := os.Stat(filepath.Join("/sys/module", driver)); err != nil {
			if err := testutil.LoadModule(ko, params); err != nil {
				t.Errorf("restoring %s: %v", driver, err)
			}
		}
	})

	if err := testutil.UnloadModule(driver); err != nil {
		t.Fatal(err)
	}
	var hotplugs int // change HOTPLUG=1 events delivered by nl
	removed := wantEvents(ActionRemove, before)
	if diff := cmp.Diff(removed, collect(t, nl, len(before), &hotplugs)); diff != "" {
		t.Errorf("netlink remove events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(removed, collect(t, ino, len(before), nil)); diff != "" {
		t.Errorf("inotify remove events (-want +got):\n%s", diff)
	}
	for _, n := range before {
		if _, err := os.Stat(filepath.Join("/dev/dri", n.name)); err == nil {
			t.Errorf("/dev/dri/%s still exists", n.name)
		}
	}

	if err := testutil.LoadModule(ko, params); err != nil {
		t.Fatal(err)
	}
	netAdds := collect(t, nl, len(before), &hotplugs)
	after := driverNodes(t, driver)
	t.Logf("reloaded: %v", after)
	added := wantEvents(ActionAdd, after)
	if diff := cmp.Diff(added, netAdds); diff != "" {
		t.Errorf("netlink add events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(added, collect(t, ino, len(before), nil)); diff != "" {
		t.Errorf("inotify add events (-want +got):\n%s", diff)
	}
	for _, n := range after {
		testutil.NeedPath(t, filepath.Join("/dev/dri", n.name), "devtmpfs made no node")
	}
	// Minors are handed out lowest first, so the nodes come back under
	// their names; other packages' tests rely on that only through the
	// driver name, but a change here is worth knowing.
	if diff := cmp.Diff(wantEvents(ActionAdd, before), added); diff != "" {
		t.Logf("nodes came back under other names (-before +after):\n%s", diff)
	}
	// Every HOTPLUG=1 change the kernel sent for the driver's nodes
	// reaches the consumer through the default filter.
	var sent int
	for _, ev := range logRaw(t, raw) {
		if ev.Action == ActionChange && ev.Env["HOTPLUG"] == "1" && strings.HasPrefix(ev.DevPath, "/devices/platform/"+driver+"/") {
			sent++
		}
	}
	for hotplugs < sent {
		ev := waitEvent(t, nl, 5*time.Second, func(Event) bool { return true }, nil)
		if ev.Action != ActionChange || ev.Env["HOTPLUG"] != "1" || !IsDRMNode(ev.DevName) {
			t.Errorf("unexpected event %s %v", &ev, ev.Env)
		}
		hotplugs++
	}
	t.Logf("%d HOTPLUG=1 change event(s)", sent)
	if st := nl.Stats(); st.NotKernel != 0 || st.Malformed != 0 || st.Overflows != 0 {
		t.Errorf("netlink stats %+v", st)
	}
}

// openRaw opens a second uevent socket that the test drains at the end,
// to log every message of the run, unfiltered, as fuzz corpus candidates.
func openRaw(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, DefaultReceiveBuffer)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// logRaw logs what the raw socket holds as lines of the fuzz corpus
// format (`[]byte("…")`), with the summary the parser makes of each, and
// returns the parsed events. The kernel's messages must all parse.
func logRaw(t *testing.T, fd int) []Event {
	t.Helper()
	var evs []Event
	buf := make([]byte, recvBufSize)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return evs
		}
		ev, err := Parse(buf[:n])
		if err != nil {
			t.Errorf("the kernel sent %q: %v", buf[:n], err)
			continue
		}
		t.Logf("uevent %s\ncorpus: []byte(%q)", &ev, buf[:n])
		evs = append(evs, ev)
	}
}
