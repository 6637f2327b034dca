package uevent

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Action is what happened to a device: the word before the '@' of a kernel
// uevent (lib/kobject_uevent.c, kobject_actions[]).
type Action string

// The kernel's actions, and ActionOverflow, which the Listener makes up.
const (
	ActionAdd     Action = "add"
	ActionRemove  Action = "remove"
	ActionChange  Action = "change"
	ActionMove    Action = "move"
	ActionOnline  Action = "online"
	ActionOffline Action = "offline"
	ActionBind    Action = "bind"
	ActionUnbind  Action = "unbind"

	// ActionOverflow is not sent by the kernel: a Listener delivers it when
	// events were lost (the netlink socket's receive buffer overflowed,
	// ENOBUFS, or the inotify queue did, IN_Q_OVERFLOW). The consumer must
	// rescan the devices it follows. Such an Event carries nothing else and
	// is never filtered out. Parse rejects it as an action.
	ActionOverflow Action = "overflow"
)

// ErrMalformed is matched (errors.Is) by every error of Parse.
var ErrMalformed = errors.New("uevent: malformed message")

// Event is one device event: a kernel uevent parsed by Parse, or one that
// the inotify fallback synthesized from a /dev node appearing or going.
//
// Events are values; a Listener never touches one again after delivering
// it, so the receiver may keep and modify it (Env included).
type Event struct {
	// Action is what happened.
	Action Action
	// DevPath is the kobject's path under /sys (DEVPATH), always starting
	// with '/': "/devices/platform/vkms/drm/card1" for a device,
	// "/module/vkms" for a module. The
	// inotify fallback fills it from /sys/dev/char/MAJOR:MINOR when the
	// node is a character device the sysfs tree knows (for a remove, from
	// what it saw earlier); otherwise it is empty.
	DevPath string
	// Subsystem is the kernel subsystem (SUBSYSTEM): "drm", "dma_heap",
	// "misc", and many others.
	Subsystem string
	// DevName is the device node relative to /dev (DEVNAME), for example
	// "dri/card1", "dma_heap/system" or "udmabuf"; empty when the device
	// has no node.
	DevName string
	// Major and Minor are the node's device number (MAJOR, MINOR); both 0
	// when the event has none (see HasDevnum).
	Major, Minor uint32
	// Seqnum is the kernel's event sequence number (SEQNUM); 0 for events
	// the inotify fallback synthesized.
	Seqnum uint64
	// Env holds every KEY=VALUE pair of the event, the ones above
	// included, for example HOTPLUG=1 on a DRM change or SYNTH_UUID on a
	// synthetic uevent. It is nil only for ActionOverflow.
	Env map[string]string
}

// HasDevnum reports whether the event carried a device number.
func (e *Event) HasDevnum() bool {
	_, ok := e.Env["MAJOR"]
	return ok
}

// String renders the event like udevadm monitor: "change /devices/…/card1
// (drm) dri/card1 226:1 seq 1234".
func (e *Event) String() string {
	if e.Action == ActionOverflow {
		return "overflow: events were lost"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (%s)", e.Action, e.DevPath, e.Subsystem)
	if e.DevName != "" {
		b.WriteString(" " + e.DevName)
	}
	if e.HasDevnum() {
		fmt.Fprintf(&b, " %d:%d", e.Major, e.Minor)
	}
	if e.Seqnum != 0 {
		fmt.Fprintf(&b, " seq %d", e.Seqnum)
	}
	return b.String()
}

// maxActionLen bounds the action word; the kernel's longest is "offline".
const maxActionLen = 16

// Parse parses a kernel uevent as the kernel broadcasts it on
// NETLINK_KOBJECT_UEVENT: a header "ACTION@DEVPATH", a NUL, then
// "KEY=VALUE" strings each ended by a NUL. It is pure: it reads msg and
// keeps no reference to it.
//
// Parse is strict, since the kernel always writes the same shape: the
// header's action must be lower-case letters and its path must start with
// '/'; ACTION, DEVPATH, SUBSYSTEM and SEQNUM must be present, the first two
// equal to the header; MAJOR and MINOR must come together as decimal
// numbers; DEVNAME must be a relative path without "." or ".." elements,
// since consumers join it to /dev. Messages in udev's "libudev" format,
// which user-space udev multicasts, are rejected. Every error matches
// ErrMalformed.
func Parse(msg []byte) (Event, error) {
	hdr, rest, ok := bytes.Cut(msg, []byte{0})
	if !ok {
		return Event{}, malformed("no NUL after the header")
	}
	action, devpath, ok := bytes.Cut(hdr, []byte{'@'})
	if !ok {
		if bytes.HasPrefix(msg, []byte("libudev\x00")) {
			return Event{}, malformed("a udev (libudev) message, not a kernel uevent")
		}
		return Event{}, malformed("header %q has no '@'", trunc(hdr))
	}
	if len(action) == 0 || len(action) > maxActionLen {
		return Event{}, malformed("bad action %q", trunc(action))
	}
	for _, c := range action {
		if c < 'a' || c > 'z' {
			return Event{}, malformed("bad action %q", trunc(action))
		}
	}
	if Action(action) == ActionOverflow {
		return Event{}, malformed("action %q is reserved", action)
	}
	if len(devpath) == 0 || devpath[0] != '/' {
		return Event{}, malformed("bad device path %q", trunc(devpath))
	}

	e := Event{Action: Action(action), DevPath: string(devpath), Env: make(map[string]string, 8)}
	for len(rest) > 0 {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{0})
		if len(kv) == 0 {
			if len(rest) == 0 {
				break // the kernel ends the last pair with a NUL
			}
			return Event{}, malformed("empty key=value pair")
		}
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			return Event{}, malformed("bad key=value pair %q", trunc(kv))
		}
		e.Env[string(k)] = string(v)
	}

	if a, ok := e.Env["ACTION"]; !ok || a != string(e.Action) {
		return Event{}, malformed("ACTION=%q does not match the header's %q", trunc([]byte(a)), e.Action)
	}
	if p, ok := e.Env["DEVPATH"]; !ok || p != e.DevPath {
		return Event{}, malformed("DEVPATH=%q does not match the header's %q", trunc([]byte(p)), trunc(devpath))
	}
	e.Subsystem = e.Env["SUBSYSTEM"]
	if e.Subsystem == "" {
		return Event{}, malformed("no SUBSYSTEM")
	}
	seq, ok := e.Env["SEQNUM"]
	if !ok {
		return Event{}, malformed("no SEQNUM")
	}
	var err error
	if e.Seqnum, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return Event{}, malformed("bad SEQNUM=%q", trunc([]byte(seq)))
	}
	major, hasMajor := e.Env["MAJOR"]
	minor, hasMinor := e.Env["MINOR"]
	if hasMajor != hasMinor {
		return Event{}, malformed("MAJOR and MINOR must come together")
	}
	if hasMajor {
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if err1 != nil || err2 != nil {
			return Event{}, malformed("bad device number %q:%q", trunc([]byte(major)), trunc([]byte(minor)))
		}
		e.Major, e.Minor = uint32(ma), uint32(mi)
	}
	if name, ok := e.Env["DEVNAME"]; ok {
		if !validDevName(name) {
			return Event{}, malformed("bad DEVNAME=%q", trunc([]byte(name)))
		}
		e.DevName = name
	}
	return e, nil
}

// validDevName reports whether name is a clean relative path: no leading
// '/', no empty, "." or ".." element.
func validDevName(name string) bool {
	if name == "" {
		return false
	}
	for el := range strings.SplitSeq(name, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// trunc shortens what an error quotes from a hostile message.
func trunc(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// Relevant is the default Filter: it keeps the events heapd reacts to.
//
//   - drm: add and remove of a card or render node (DEVNAME dri/cardN or
//     dri/renderDN; connectors and other DRM objects have no node and are
//     dropped), and change with HOTPLUG=1 (a display was plugged or
//     unplugged, or a driver asks for a re-probe);
//   - dma_heap: add and remove of a heap node;
//   - misc: add and remove of udmabuf, the only misc device heapd uses.
//
// Everything else, bind and unbind included, is dropped. ActionOverflow
// never reaches a Filter.
func Relevant(e Event) bool {
	addRemove := e.Action == ActionAdd || e.Action == ActionRemove
	switch e.Subsystem {
	case "drm":
		if !IsDRMNode(e.DevName) {
			return false
		}
		return addRemove || e.Action == ActionChange && e.Env["HOTPLUG"] == "1"
	case "dma_heap":
		return addRemove && strings.HasPrefix(e.DevName, "dma_heap/")
	case "misc":
		return addRemove && e.DevName == "udmabuf"
	}
	return false
}

// IsDRMNode reports whether devName (relative to /dev) is a DRM primary or
// render node: "dri/card<N>" or "dri/renderD<N>".
func IsDRMNode(devName string) bool {
	name, ok := strings.CutPrefix(devName, "dri/")
	if !ok {
		return false
	}
	return isDRMNodeName(name)
}

// isDRMNodeName is IsDRMNode for a name inside /dev/dri.
func isDRMNodeName(name string) bool {
	for _, p := range []string{"card", "renderD"} {
		if n, ok := strings.CutPrefix(name, p); ok {
			return isDigits(n)
		}
	}
	return false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
