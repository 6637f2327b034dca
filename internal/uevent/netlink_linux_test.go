package uevent

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

// The kernel's own uevent for a synthetic trigger arrives, parsed, with
// the UUID it was asked to carry.
func TestIntegrationSyntheticUevent(t *testing.T) {
	needSynth(t)
	l := openNetlinkOrSkip(t, &Config{Filter: hasUUID})
	t.Logf("listening with %s", l)
	raw := openRaw(t)
	uuid := newUUID(t)
	synth(t, uuid)
	ev := waitEvent(t, l, 5*time.Second, uuidIs(uuid), nil)
	logRaw(t, raw)
	want := Event{
		Action: ActionChange, DevPath: "/devices/virtual/mem/null", Subsystem: "mem",
		DevName: "null", Major: 1, Minor: 3,
		Env: map[string]string{
			"ACTION": "change", "DEVPATH": "/devices/virtual/mem/null", "SUBSYSTEM": "mem",
			"DEVNAME": "null", "MAJOR": "1", "MINOR": "3", "DEVMODE": "0666",
			"SYNTH_UUID": uuid, "SYNTH_ARG_HEAPD": "test",
		},
	}
	if ev.Seqnum == 0 || ev.Env["SEQNUM"] == "" {
		t.Errorf("no SEQNUM: %v", ev.Env)
	}
	ignoreSeq := cmp.Options{
		cmpopts.IgnoreFields(Event{}, "Seqnum"),
		cmpopts.IgnoreMapEntries(func(k, _ string) bool { return k == "SEQNUM" }),
	}
	if diff := cmp.Diff(want, ev, ignoreSeq); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.NotKernel != 0 || st.Malformed != 0 || st.Delivered != 1 {
		t.Errorf("stats %+v, want 1 delivered, nothing dropped", st)
	}
	if Relevant(ev) {
		t.Errorf("Relevant keeps %s", &ev)
	}
}

// Messages that a local process sends to our port id are dropped and
// counted, whatever their content; the kernel's next message still
// arrives.
func TestIntegrationForgedUnicastDropped(t *testing.T) {
	needSynth(t)
	l := openNetlinkOrSkip(t, &Config{Filter: hasUUID})
	port := l.src.(*netlinkSource).portID
	if port == 0 {
		t.Fatal("listener has port id 0")
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	forgedUUID := newUUID(t)
	forged := [][]byte{
		// A perfect imitation of the kernel's message.
		msg("change@/devices/virtual/mem/null", "ACTION=change", "DEVPATH=/devices/virtual/mem/null",
			"SUBSYSTEM=mem", "SYNTH_UUID="+forgedUUID, "SYNTH_ARG_HEAPD=test",
			"MAJOR=1", "MINOR=3", "DEVNAME=null", "SEQNUM=1"),
		// A DRM hot-unplug, which heapd would act on.
		msg("remove@/devices/platform/vkms/drm/card1", "ACTION=remove", "DEVPATH=/devices/platform/vkms/drm/card1",
			"SUBSYSTEM=drm", "MAJOR=226", "MINOR=1", "DEVNAME=dri/card1", "SEQNUM=2", "SYNTH_ARG_HEAPD=test"),
		// udev's format (what it multicasts on group 2).
		append([]byte("libudev\x00\xfe\xed\xca\xfe"), make([]byte, 32)...),
	}
	for _, m := range forged {
		if err := unix.Sendto(fd, m, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}); err != nil {
			t.Fatalf("unicast to port %d: %v", port, err)
		}
	}
	// The real event queues behind the forgeries, so once it is here
	// they have been read.
	uuid := newUUID(t)
	synth(t, uuid)
	waitEvent(t, l, 5*time.Second, uuidIs(uuid), func(ev Event) {
		t.Errorf("a forged message was delivered: %s %v", &ev, ev.Env)
	})
	if st := l.Stats(); st.NotKernel != uint64(len(forged)) || st.Delivered != 1 {
		t.Errorf("stats %+v, want NotKernel %d and 1 delivered", st, len(forged))
	}
}

// A slow consumer overflows the socket: the kernel says ENOBUFS, the
// consumer gets ActionOverflow, and events flow again afterwards.
func TestIntegrationOverflow(t *testing.T) {
	needSynth(t)
	l := openNetlinkOrSkip(t, &Config{Filter: hasUUID, ReceiveBuffer: 1}) // the kernel's minimum, a few KiB
	const n = 2 * (backlog + 64)
	for range n {
		synth(t, newUUID(t))
	}
	var got, overflows int
	ev := waitEvent(t, l, 5*time.Second, func(ev Event) bool { return ev.Action == ActionOverflow }, func(Event) { got++ })
	if ev.Env != nil || ev.DevPath != "" {
		t.Errorf("overflow event carries data: %+v", ev)
	}
	overflows++
	// Drain what is left, then check that the socket still works.
	for {
		ctx := time.Now().Add(300 * time.Millisecond)
		ev, ok := nextBefore(l, ctx)
		if !ok {
			break
		}
		if ev.Action == ActionOverflow {
			overflows++
		} else {
			got++
		}
	}
	t.Logf("%d of %d events arrived, %d overflow(s); stats %+v", got, n, overflows, l.Stats())
	if got >= n {
		t.Errorf("all %d events arrived: no overflow happened", n)
	}
	if st := l.Stats(); st.Overflows != uint64(overflows) {
		t.Errorf("Stats().Overflows = %d, consumer saw %d", st.Overflows, overflows)
	}
	uuid := newUUID(t)
	synth(t, uuid)
	waitEvent(t, l, 5*time.Second, uuidIs(uuid), nil)
}

// nextBefore returns the next event if one comes before deadline.
func nextBefore(l *Listener, deadline time.Time) (Event, bool) {
	select {
	case ev, ok := <-l.Events():
		return ev, ok
	case <-time.After(time.Until(deadline)):
		return Event{}, false
	}
}

// The kernel grants a large receive buffer to a privileged process.
func TestIntegrationReceiveBuffer(t *testing.T) {
	testutil.NeedRoot(t)
	l := openNetlinkOrSkip(t, nil)
	// The kernel reports twice the request (it counts its overhead).
	if got := l.src.(*netlinkSource).rcvbuf; got < DefaultReceiveBuffer {
		t.Errorf("receive buffer %d, want at least %d with CAP_NET_ADMIN", got, DefaultReceiveBuffer)
	}
	if s := l.String(); !strings.HasPrefix(s, "netlink uevents (kernel multicast group 1, port ") {
		t.Errorf("String() = %q", s)
	}
}

// Auto uses netlink exactly when the network namespace gets uevents.
func TestAutoHere(t *testing.T) {
	l, err := Open(&Config{DevDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	why := netnsWithoutUevents()
	t.Logf("Auto: %s (netns check: %q)", l, why)
	if why != "" && l.Mechanism() != Inotify {
		t.Errorf("Auto picked %v although %s", l.Mechanism(), why)
	}
	if why == "" && l.Mechanism() != Netlink && !strings.Contains(l.String(), "netlink unusable") {
		t.Errorf("Auto picked %v without saying why: %s", l.Mechanism(), l)
	}
}

// In a network namespace of the initial user namespace (`unshare -n`,
// `ip netns`) uevents arrive and Auto uses them; in one owned by another
// user namespace (a rootless container) the kernel sends none, and Auto
// falls back to inotify and says why. A forged multicast to group 1 (root
// may send one) is dropped; it is sent inside a private namespace so that
// no other listener of this machine sees it.
func TestIntegrationNamespaces(t *testing.T) {
	needSynth(t)
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		// A kernel without CONFIG_USER_NS and CONFIG_NET_NS has one
		// network namespace, which gets uevents.
		t.Logf("no namespaces on this kernel (%v): checking that Auto uses netlink", err)
		if why := netnsWithoutUevents(); why != "" {
			t.Errorf("netnsWithoutUevents() = %q", why)
		}
		l, err := Open(&Config{DevDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l.Mechanism() != Netlink {
			t.Errorf("Auto picked %s", l)
		}
		return
	}
	const wait = 2 * time.Second
	// Our own listener proves each synthetic event was sent.
	here := openNetlinkOrSkip(t, &Config{Filter: hasUUID})
	listen := func(t *testing.T, flags uintptr, m Mechanism) childReport {
		c := startChild(t, flags, childRequest{Mode: "listen", Mechanism: m, Wait: wait})
		ready := c.report(t)
		if ready.Err != "" {
			t.Fatalf("child: %s", ready.Err)
		}
		t.Logf("child: %s (netns check: %q)", ready.String, ready.Why)
		uuid := newUUID(t)
		synth(t, uuid)
		waitEvent(t, here, 5*time.Second, uuidIs(uuid), nil)
		fmt.Fprintln(c.stdin, uuid)
		rep := c.report(t)
		if rep.Err != "" {
			t.Fatalf("child: %s", rep.Err)
		}
		rep.Mechanism, rep.String, rep.Why = ready.Mechanism, ready.String, ready.Why
		return rep
	}

	t.Run("netns", func(t *testing.T) {
		rep := listen(t, unix.CLONE_NEWNET, Auto)
		if rep.Mechanism != "netlink" || rep.Why != "" {
			t.Errorf("Auto in a new network namespace: %s (%q), want netlink", rep.String, rep.Why)
		}
		if !rep.Got {
			t.Errorf("the uevent did not reach a new network namespace of the initial user namespace (stats %+v)", rep.Stats)
		}
	})
	t.Run("userns-auto", func(t *testing.T) {
		rep := listen(t, unix.CLONE_NEWUSER|unix.CLONE_NEWNET, Auto)
		if rep.Mechanism != "inotify" || !strings.Contains(rep.String, "user namespace other than the initial one") {
			t.Errorf("Auto in a user+network namespace: %s, want inotify and why", rep.String)
		}
	})
	t.Run("userns-netlink", func(t *testing.T) {
		// What the check is for: the socket binds, and hears nothing.
		rep := listen(t, unix.CLONE_NEWUSER|unix.CLONE_NEWNET, Netlink)
		if rep.Mechanism != "netlink" {
			t.Fatalf("forced netlink: %s", rep.String)
		}
		if rep.Got {
			t.Errorf("a uevent reached a network namespace of a non-initial user namespace: the kernel changed, revisit netnsWithoutUevents")
		}
	})
	t.Run("forged-multicast", func(t *testing.T) {
		c := startChild(t, unix.CLONE_NEWNET, childRequest{Mode: "forge-multicast", Mechanism: Netlink, Wait: 5 * time.Second})
		rep := c.report(t)
		if rep.Err != "" {
			t.Fatalf("child: %s (stats %+v)", rep.Err, rep.Stats)
		}
		if rep.Stats.NotKernel != 1 || rep.Stats.Delivered != 0 {
			t.Errorf("stats %+v, want 1 dropped and nothing delivered", rep.Stats)
		}
	})
}
