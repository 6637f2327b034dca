package uevent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// devTree is a temporary stand-in for /dev and /sys. As root its nodes are
// real character devices (mknod) that the fake /sys/dev/char knows;
// otherwise they are regular files, which have no device number.
type devTree struct {
	t        *testing.T
	dev, sys string
	chardev  bool
}

func newDevTree(t *testing.T, chardev bool) *devTree {
	root := t.TempDir()
	d := &devTree{t: t, dev: filepath.Join(root, "dev"), sys: filepath.Join(root, "sys"), chardev: chardev}
	for _, dir := range []string{d.dev, filepath.Join(d.sys, "dev", "char")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// mknod creates the node name (relative to dev) with the device number
// and, for a character device, the sysfs link to devPath.
func (d *devTree) mknod(name string, major, minor uint32, devPath string) {
	d.t.Helper()
	p := filepath.Join(d.dev, name)
	if !d.chardev {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			d.t.Fatal(err)
		}
		return
	}
	link := filepath.Join(d.sys, "dev", "char", fmt.Sprintf("%d:%d", major, minor))
	os.Remove(link)
	if err := os.Symlink("../.."+devPath, link); err != nil {
		d.t.Fatal(err)
	}
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		d.t.Fatalf("mknod %s: %v", p, err)
	}
}

func (d *devTree) mkdir(name string) {
	d.t.Helper()
	if err := os.Mkdir(filepath.Join(d.dev, name), 0o755); err != nil {
		d.t.Fatal(err)
	}
}

func (d *devTree) remove(name string) {
	d.t.Helper()
	if err := os.Remove(filepath.Join(d.dev, name)); err != nil {
		d.t.Fatal(err)
	}
}

func (d *devTree) rename(from, to string) {
	d.t.Helper()
	if err := os.Rename(filepath.Join(d.dev, from), filepath.Join(d.dev, to)); err != nil {
		d.t.Fatal(err)
	}
}

// want is the event the fallback should synthesize for a node of d.
func (d *devTree) want(a Action, subsystem, devName string, major, minor uint32, devPath string) Event {
	e := Event{Action: a, Subsystem: subsystem, DevName: devName,
		Env: map[string]string{"ACTION": string(a), "SUBSYSTEM": subsystem, "DEVNAME": devName}}
	if subsystem == "drm" {
		e.Env["DEVTYPE"] = "drm_minor"
	}
	if d.chardev {
		e.Major, e.Minor, e.DevPath = major, minor, devPath
		e.Env["MAJOR"], e.Env["MINOR"] = fmt.Sprint(major), fmt.Sprint(minor)
		e.Env["DEVPATH"] = devPath
	}
	return e
}

// expect reads len(want) events and compares them, in order.
func expect(t *testing.T, l *Listener, want ...Event) {
	t.Helper()
	var got []Event
	for range want {
		got = append(got, waitEvent(t, l, 5*time.Second, func(Event) bool { return true }, nil))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

func TestInotify(t *testing.T) {
	for _, chardev := range []bool{false, true} {
		t.Run(map[bool]string{false: "files", true: "chardev"}[chardev], func(t *testing.T) {
			if chardev && os.Geteuid() != 0 {
				t.Skip("mknod needs root; the files variant covers the rest")
			}
			testInotify(t, newDevTree(t, chardev))
		})
	}
}

func testInotify(t *testing.T, d *devTree) {
	const (
		vgem = "/devices/platform/vgem/drm/card0"
		vkms = "/devices/platform/vkms/drm/card1"
		rndr = "/devices/platform/vgem/drm/renderD128"
		sysh = "/devices/virtual/dma_heap/system"
		udma = "/devices/virtual/misc/udmabuf"
	)
	d.mkdir("dri")
	d.mknod("dri/card0", 226, 0, vgem)
	d.mknod("null", 1, 3, "/devices/virtual/mem/null")

	l, err := Open(&Config{Mechanism: Inotify, DevDir: d.dev, SysDir: d.sys})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Logf("listening with %s", l)

	// Nodes that exist at Open are not reported: the consumer scans.
	d.mknod("dri/card1", 226, 1, vkms)
	expect(t, l, d.want(ActionAdd, "drm", "dri/card1", 226, 1, vkms))
	d.mknod("dri/renderD128", 226, 128, rndr)
	expect(t, l, d.want(ActionAdd, "drm", "dri/renderD128", 226, 128, rndr))

	// Not devices heapd follows: nothing (the next expect would see it).
	d.mkdir("dri/by-path")
	d.mknod("dri/by-path/x", 226, 2, "/devices/x")
	d.mknod("dri/controlD64", 226, 64, "/devices/y")
	d.mknod("zero", 1, 5, "/devices/virtual/mem/zero")

	// A node that existed at Open is reported with what was seen then.
	d.remove("dri/card0")
	expect(t, l, d.want(ActionRemove, "drm", "dri/card0", 226, 0, vgem))

	// A directory that appears later is watched from then on.
	d.mkdir("dma_heap")
	d.mknod("dma_heap/system", 251, 0, sysh)
	expect(t, l, d.want(ActionAdd, "dma_heap", "dma_heap/system", 251, 0, sysh))
	if err := os.Symlink("system", filepath.Join(d.dev, "dma_heap", "vidbuf_cached")); err != nil {
		t.Fatal(err) // udev's alias: not a kernel node, ignored
	}
	d.mknod("udmabuf", 10, 125, udma)
	expect(t, l, d.want(ActionAdd, "misc", "udmabuf", 10, 125, udma))

	// Renames are removes and adds.
	d.rename("dma_heap/system", "dma_heap/system2")
	expect(t, l,
		d.want(ActionRemove, "dma_heap", "dma_heap/system", 251, 0, sysh),
		d.want(ActionAdd, "dma_heap", "dma_heap/system2", 251, 0, sysh))

	// devtmpfs removes an emptied directory and creates it again.
	d.remove("dri/card1")
	d.remove("dri/renderD128")
	d.remove("dri/by-path/x")
	d.remove("dri/by-path")
	d.remove("dri/controlD64")
	d.remove("dri")
	expect(t, l,
		d.want(ActionRemove, "drm", "dri/card1", 226, 1, vkms),
		d.want(ActionRemove, "drm", "dri/renderD128", 226, 128, rndr))
	for i := range 20 {
		// Create the directory and its node at once: the node may
		// come before the watch (the scan reports it) or after (the
		// watch does), never twice.
		d.mkdir("dri")
		d.mknod("dri/card0", 226, 0, vgem)
		expect(t, l, d.want(ActionAdd, "drm", "dri/card0", 226, 0, vgem))
		d.remove("dri/card0")
		d.remove("dri")
		expect(t, l, d.want(ActionRemove, "drm", "dri/card0", 226, 0, vgem))
		if t.Failed() {
			t.Fatalf("iteration %d", i)
		}
	}

	d.remove("udmabuf")
	expect(t, l, d.want(ActionRemove, "misc", "udmabuf", 10, 125, udma))
	noEvent(t, l, 200*time.Millisecond, func(Event) bool { return true })
	if st := l.Stats(); st.NotKernel != 0 || st.Malformed != 0 || st.Overflows != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The fallback's events pass the same default filter as the kernel's.
func TestInotifyEventsAreRelevant(t *testing.T) {
	d := newDevTree(t, false)
	l, err := Open(&Config{Mechanism: Inotify, DevDir: d.dev, SysDir: d.sys, Filter: func(e Event) bool {
		if !Relevant(e) {
			t.Errorf("Relevant drops %s", &e)
		}
		return true
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d.mkdir("dri")
	d.mknod("dri/renderD129", 0, 0, "")
	d.mknod("udmabuf", 0, 0, "")
	waitEvent(t, l, 5*time.Second, func(e Event) bool { return e.DevName == "udmabuf" }, nil)
}

// Removing the watched /dev itself stops the Listener with an error.
func TestInotifyDevDirRemoved(t *testing.T) {
	d := newDevTree(t, false)
	l, err := Open(&Config{Mechanism: Inotify, DevDir: d.dev, SysDir: d.sys})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Remove(d.dev); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-l.Events():
		if ok {
			t.Fatal("an event")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Listener goes on without its directory")
	}
	if err := l.Err(); err == nil {
		t.Error("Err() = nil")
	}
	if _, err := l.Next(t.Context()); err == nil || err == ErrClosed {
		t.Errorf("Next: %v, want the read error", err)
	}
}

// After the kernel dropped inotify records (IN_Q_OVERFLOW) the consumer
// gets ActionOverflow and the fallback's own table follows /dev again.
func TestInotifyQueueOverflow(t *testing.T) {
	d := newDevTree(t, false)
	d.mkdir("dri")
	d.mknod("dri/card0", 0, 0, "")
	s, err := openInotify(d.dev, d.sys, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// Records about these are "lost": handle never sees them.
	d.remove("dri/card0")
	d.mknod("dri/card1", 0, 0, "")
	d.mkdir("dma_heap")
	d.mknod("dma_heap/system", 0, 0, "")
	var c counters
	got, err := s.handle(nil, -1, unix.IN_Q_OVERFLOW, "", &c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Event{{Action: ActionOverflow}}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if c.overflows.Load() != 1 {
		t.Errorf("overflows = %d", c.overflows.Load())
	}
	var names []string
	for n := range s.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"dma_heap/system", "dri/card1"}, names); diff != "" {
		t.Errorf("nodes after resync (-want +got):\n%s", diff)
	}
}
