package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/testutil"
)

func TestModeAllows(t *testing.T) {
	for _, tc := range []struct {
		mode, owner, group uint32
		groups             []int
		want               bool
	}{
		{0o600, 0, 0, nil, false},
		{0o660, 0, 44, nil, false},
		{0o660, 0, 44, []int{44}, true},
		{0o660, 0, demoUID, nil, true},
		{0o600, demoUID, 0, nil, true},
		{0o066, demoUID, 0, nil, false}, // the owner class decides, not other
		{0o604, 0, 0, nil, true},
		{0o602, 0, 0, nil, true},
		{0o001, 0, 0, nil, false},
	} {
		if got := modeAllows(tc.mode, tc.owner, tc.group, demoUID, demoUID, tc.groups); got != tc.want {
			t.Errorf("mode %o %d:%d groups %v: %v, want %v", tc.mode, tc.owner, tc.group, tc.groups, got, tc.want)
		}
	}
}

// The probe really runs with the renderer's credentials and really
// opens: a root-only file refuses it, /dev/null (0666) does not, and the
// verdict says so.
func TestPrimaryProbe(t *testing.T) {
	testutil.NeedRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "card0")
	if err := os.WriteFile(node, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := demoPrimaryCheck{Node: node}
	if err := checkPrimaryBefore(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if c.ModeAllows || c.ProbeOpened || !strings.Contains(c.ProbeError, "permission denied") || c.ProbeCredentials != demoCredentials() {
		t.Errorf("a root-only file: %+v", c)
	}
	if !strings.Contains(c.Mode, "rw------- 0:0") {
		t.Errorf("mode %q", c.Mode)
	}
	// Before the renderer ran, the verdict lacks the watch.
	if err := c.verdict(); err == nil || !strings.Contains(err.Error(), "could not look") {
		t.Errorf("verdict without samples: %v", err)
	}

	open := demoPrimaryCheck{Node: "/dev/null"}
	if err := checkPrimaryBefore(ctx, &open); err != nil {
		t.Fatal(err)
	}
	if !open.ModeAllows || !open.ProbeOpened {
		t.Errorf("/dev/null: %+v", open)
	}
	if err := open.verdict(); err == nil || !strings.Contains(err.Error(), "grants the renderer") {
		t.Errorf("verdict for /dev/null: %v", err)
	}
}

// The watch sees a node held as an fd under another path (by device
// number), and a mapping of it after its fd was closed; it sees nothing
// for a node not held.
func TestWatchPrimary(t *testing.T) {
	watch := func(node string) demoPrimaryCheck {
		t.Helper()
		c := demoPrimaryCheck{Node: node}
		w, err := watchPrimary(os.Getpid(), &c)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		w.Stop()
		if c.Samples == 0 || !strings.HasPrefix(c.RendererCredentials, "uid ") {
			t.Errorf("%s: %d samples, credentials %q", node, c.Samples, c.RendererCredentials)
		}
		return c
	}
	if c := watch("/dev/full"); c.SeenOpen {
		t.Fatalf("/dev/full seen though not open: %s", c.SeenAs)
	}

	// /dev/full opened as /proc/self/root/dev/full: another path, the
	// same device.
	f, err := os.Open("/proc/self/root/dev/full")
	if err != nil {
		t.Fatal(err)
	}
	c := watch("/dev/full")
	f.Close()
	if !c.SeenOpen || !strings.HasPrefix(c.SeenAs, "fd ") {
		t.Errorf("/dev/full held: seen %v as %q", c.SeenOpen, c.SeenAs)
	}

	// A mapping, its fd closed, under a path other than the node's: a
	// /proc/<pid> whose maps lists /proc/self/root/dev/full (a mapping of
	// a DRM node cannot be made on this host).
	proc := t.TempDir()
	if err := os.Mkdir(filepath.Join(proc, "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"status": "Name:\trenderer\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t\n",
		"maps": "7f0000000000-7f0000001000 r--p 00000000 00:1f 123  /usr/lib/libc.so.6\n" +
			"7f0000001000-7f0000002000 rw-s 00000000 00:05 4  /proc/self/root/dev/full\n",
	} {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c = demoPrimaryCheck{Node: "/dev/full"}
	w, err := watchProc(proc, &c)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	w.Stop()
	if !c.SeenOpen || !strings.HasPrefix(c.SeenAs, "mapping ") || c.RendererCredentials != demoCredentials() {
		t.Errorf("/dev/full mapped: seen %v as %q, credentials %q", c.SeenOpen, c.SeenAs, c.RendererCredentials)
	}
}

func TestProcCredentials(t *testing.T) {
	got, ok := procCredentials("/proc/self/status")
	groups, _ := os.Getgroups()
	if want := credString(os.Getuid(), os.Getgid(), groups); !ok || got != want {
		t.Errorf("got %q %v, want %q", got, ok, want)
	}
	if _, ok := procCredentials("/proc/self/no-such-file"); ok {
		t.Error("a missing status file gave credentials")
	}
}

// On a real vkms primary node: the watch sees it held as an fd and, after
// the fd is closed, as a mapping of a dumb buffer (what a renderer doing
// it the old way would have); the probe as the renderer is refused.
func TestIntegrationWatchPrimarySeesDRM(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedRoot(t)
	vkms, _, err := demoDevices()
	if err != nil {
		testutil.Missing(t, err.Error())
	}
	node := vkms.Primary.Path
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := demoPrimaryCheck{Node: node}
	if err := checkPrimaryBefore(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if c.ModeAllows || c.ProbeOpened || !strings.Contains(c.ProbeError, "permission denied") {
		t.Errorf("probe of %s: %+v", node, c)
	}

	watch := func() demoPrimaryCheck {
		t.Helper()
		c := demoPrimaryCheck{Node: node}
		w, err := watchPrimary(os.Getpid(), &c)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		w.Stop()
		return c
	}
	dev, err := drm.Open(node)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if c := watch(); !c.SeenOpen || !strings.HasPrefix(c.SeenAs, "fd ") {
		t.Errorf("%s held as an fd: seen %v as %q", node, c.SeenOpen, c.SeenAs)
	}
	db, err := dev.CreateDumb(64, 64, 32)
	if err != nil {
		t.Fatal(err)
	}
	m, err := db.Map()
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	defer m.Close()
	db.Close()
	dev.Close()
	if c := watch(); !c.SeenOpen || !strings.HasPrefix(c.SeenAs, "mapping ") {
		t.Errorf("%s mapped, its fd closed: seen %v as %q", node, c.SeenOpen, c.SeenAs)
	}
}
