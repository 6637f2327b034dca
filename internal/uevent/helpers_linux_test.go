package uevent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/heapd/heapd/internal/testutil"
)

// synthPath is the uevent file of /dev/null. Writing "ACTION UUID
// KEY=VALUE…" there as root makes the kernel send a real uevent for the
// device with SYNTH_UUID=UUID and SYNTH_ARG_KEY=VALUE (Linux 4.13 and
// later; Documentation/ABI/testing/sysfs-uevent). "change" changes
// nothing, so udev, if one runs, just re-applies its rules to /dev/null.
const synthPath = "/sys/class/mem/null/uevent"

// needSynth skips (fails in the VM tier) unless synthetic uevents can be
// triggered.
func needSynth(t testing.TB) {
	t.Helper()
	testutil.NeedRoot(t)
	testutil.NeedPath(t, synthPath, "sysfs not mounted on /sys?")
}

// newUUID returns a random version-4 UUID in the form the kernel accepts.
func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// synth makes the kernel send a synthetic change uevent for /dev/null
// carrying uuid and SYNTH_ARG_HEAPD=test.
func synth(t testing.TB, uuid string) {
	t.Helper()
	if err := os.WriteFile(synthPath, []byte("change "+uuid+" HEAPD=test"), 0); err != nil {
		t.Fatalf("synthetic uevent: %v", err)
	}
}

// hasUUID is a Filter that keeps the synthetic events of this process's
// tests (other uevents of the machine are noise here).
func hasUUID(e Event) bool { return e.Env["SYNTH_ARG_HEAPD"] == "test" }

// waitEvent returns the first event for which match is true, failing t
// when none comes within d. Events that do not match are passed to skip
// (which may be nil).
func waitEvent(t testing.TB, l *Listener, d time.Duration, match func(Event) bool, skip func(Event)) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		ev, err := l.Next(ctx)
		if err != nil {
			t.Fatalf("waiting %v for an event on %s: %v (stats %+v)", d, l, err, l.Stats())
		}
		if match(ev) {
			return ev
		}
		if skip != nil {
			skip(ev)
		}
	}
}

// noEvent fails t if an event matching match arrives within d.
func noEvent(t testing.TB, l *Listener, d time.Duration, match func(Event) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		ev, err := l.Next(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if match(ev) {
			t.Fatalf("unexpected event %s %v", &ev, ev.Env)
		}
	}
}

func uuidIs(uuid string) func(Event) bool {
	return func(e Event) bool { return e.Env["SYNTH_UUID"] == uuid }
}

// openNetlinkOrSkip opens a netlink Listener, skipping (failing in the VM
// tier) where the kernel refuses one.
func openNetlinkOrSkip(t testing.TB, cfg *Config) *Listener {
	t.Helper()
	c := Config{Mechanism: Netlink}
	if cfg != nil {
		c = *cfg
		c.Mechanism = Netlink
	}
	l, err := Open(&c)
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("no NETLINK_KOBJECT_UEVENT socket: %v (kernel without CONFIG_NET, or seccomp?)", err))
	}
	t.Cleanup(func() { l.Close() })
	return l
}
