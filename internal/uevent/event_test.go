package uevent

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// msg builds a uevent payload the way the kernel does: header, NUL, then
// each pair followed by a NUL.
func msg(header string, pairs ...string) []byte {
	var b strings.Builder
	b.WriteString(header)
	b.WriteByte(0)
	for _, p := range pairs {
		b.WriteString(p)
		b.WriteByte(0)
	}
	return []byte(b.String())
}

// encode is the inverse of Parse, for round trips: the header, then Env in
// key order.
func encode(e Event) []byte {
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = k + "=" + e.Env[k]
	}
	return msg(string(e.Action)+"@"+e.DevPath, pairs...)
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name string
		msg  []byte
		want Event
	}{{
		name: "drm card add",
		msg: msg("add@/devices/platform/vkms/drm/card1",
			"ACTION=add", "DEVPATH=/devices/platform/vkms/drm/card1", "SUBSYSTEM=drm",
			"MAJOR=226", "MINOR=1", "DEVNAME=dri/card1", "DEVTYPE=drm_minor", "SEQNUM=1523"),
		want: Event{
			Action: ActionAdd, DevPath: "/devices/platform/vkms/drm/card1", Subsystem: "drm",
			DevName: "dri/card1", Major: 226, Minor: 1, Seqnum: 1523,
			Env: map[string]string{
				"ACTION": "add", "DEVPATH": "/devices/platform/vkms/drm/card1", "SUBSYSTEM": "drm",
				"MAJOR": "226", "MINOR": "1", "DEVNAME": "dri/card1", "DEVTYPE": "drm_minor", "SEQNUM": "1523",
			},
		},
	}, {
		name: "drm hotplug change",
		msg: msg("change@/devices/pci0000:00/0000:00:02.0/drm/card0",
			"ACTION=change", "DEVPATH=/devices/pci0000:00/0000:00:02.0/drm/card0", "SUBSYSTEM=drm",
			"HOTPLUG=1", "CONNECTOR=95", "MAJOR=226", "MINOR=0", "DEVNAME=dri/card0", "DEVTYPE=drm_minor", "SEQNUM=18446744073709551615"),
		want: Event{
			Action: ActionChange, DevPath: "/devices/pci0000:00/0000:00:02.0/drm/card0", Subsystem: "drm",
			DevName: "dri/card0", Major: 226, Minor: 0, Seqnum: 18446744073709551615,
			Env: map[string]string{
				"ACTION": "change", "DEVPATH": "/devices/pci0000:00/0000:00:02.0/drm/card0", "SUBSYSTEM": "drm",
				"HOTPLUG": "1", "CONNECTOR": "95", "MAJOR": "226", "MINOR": "0", "DEVNAME": "dri/card0",
				"DEVTYPE": "drm_minor", "SEQNUM": "18446744073709551615",
			},
		},
	}, {
		name: "connector without a node",
		msg: msg("remove@/devices/platform/vkms/drm/card1/card1-Virtual-1",
			"ACTION=remove", "DEVPATH=/devices/platform/vkms/drm/card1/card1-Virtual-1", "SUBSYSTEM=drm", "SEQNUM=7"),
		want: Event{
			Action: ActionRemove, DevPath: "/devices/platform/vkms/drm/card1/card1-Virtual-1", Subsystem: "drm", Seqnum: 7,
			Env: map[string]string{
				"ACTION": "remove", "DEVPATH": "/devices/platform/vkms/drm/card1/card1-Virtual-1", "SUBSYSTEM": "drm", "SEQNUM": "7",
			},
		},
	}, {
		name: "no trailing NUL, empty value, '=' in a value",
		msg:  []byte("bind@/devices/x\x00ACTION=bind\x00DEVPATH=/devices/x\x00SUBSYSTEM=platform\x00DRIVER=\x00MODALIAS=a=b\x00SEQNUM=0"),
		want: Event{
			Action: ActionBind, DevPath: "/devices/x", Subsystem: "platform",
			Env: map[string]string{
				"ACTION": "bind", "DEVPATH": "/devices/x", "SUBSYSTEM": "platform", "DRIVER": "", "MODALIAS": "a=b", "SEQNUM": "0",
			},
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			again, err := Parse(encode(got))
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("round trip (-first +second):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	base := []string{"ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=drm", "SEQNUM=1"}
	with := func(extra ...string) []byte {
		return msg("add@/devices/x", append(append([]string{}, base...), extra...)...)
	}
	without := func(key string) []byte {
		var pairs []string
		for _, p := range base {
			if !strings.HasPrefix(p, key+"=") {
				pairs = append(pairs, p)
			}
		}
		return msg("add@/devices/x", pairs...)
	}
	for _, c := range []struct {
		name string
		msg  []byte
		want string // in the error text
	}{
		{"empty", nil, "no NUL"},
		{"header only", []byte("add@/devices/x"), "no NUL"},
		{"no at", msg("add/devices/x", base...), "has no '@'"},
		{"libudev", append([]byte("libudev\x00\xfe\xed\xca\xfe"), make([]byte, 32)...), "libudev"},
		{"empty action", msg("@/devices/x", base...), "bad action"},
		{"upper-case action", msg("ADD@/devices/x", base...), "bad action"},
		{"long action", msg(strings.Repeat("a", 17)+"@/devices/x", base...), "bad action"},
		{"overflow action", msg("overflow@/devices/x", "ACTION=overflow", "DEVPATH=/devices/x", "SUBSYSTEM=drm", "SEQNUM=1"), "reserved"},
		{"relative path", msg("add@devices/x", base...), "bad device path"},
		{"empty path", msg("add@", base...), "bad device path"},
		{"double NUL", []byte("add@/devices/x\x00ACTION=add\x00\x00DEVPATH=/devices/x\x00SUBSYSTEM=drm\x00SEQNUM=1\x00"), "empty key=value"},
		{"no equals", with("HOTPLUG"), "bad key=value"},
		{"empty key", with("=1"), "bad key=value"},
		{"no ACTION", without("ACTION"), "ACTION="},
		{"ACTION differs", msg("add@/devices/x", "ACTION=remove", "DEVPATH=/devices/x", "SUBSYSTEM=drm", "SEQNUM=1"), "ACTION="},
		{"no DEVPATH", without("DEVPATH"), "DEVPATH="},
		{"DEVPATH differs", msg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/y", "SUBSYSTEM=drm", "SEQNUM=1"), "DEVPATH="},
		{"no SUBSYSTEM", without("SUBSYSTEM"), "no SUBSYSTEM"},
		{"empty SUBSYSTEM", with("SUBSYSTEM="), "no SUBSYSTEM"},
		{"no SEQNUM", without("SEQNUM"), "no SEQNUM"},
		{"bad SEQNUM", with("SEQNUM=-1"), "bad SEQNUM"},
		{"huge SEQNUM", with("SEQNUM=18446744073709551616"), "bad SEQNUM"},
		{"MAJOR alone", with("MAJOR=226"), "together"},
		{"MINOR alone", with("MINOR=1"), "together"},
		{"bad MAJOR", with("MAJOR=x", "MINOR=1"), "bad device number"},
		{"huge MINOR", with("MAJOR=1", "MINOR=4294967296"), "bad device number"},
		{"absolute DEVNAME", with("DEVNAME=/dev/dri/card0"), "bad DEVNAME"},
		{"dotdot DEVNAME", with("DEVNAME=dri/../../etc/passwd"), "bad DEVNAME"},
		{"dot DEVNAME", with("DEVNAME=./null"), "bad DEVNAME"},
		{"empty DEVNAME", with("DEVNAME="), "bad DEVNAME"},
		{"trailing slash DEVNAME", with("DEVNAME=dri/"), "bad DEVNAME"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, err := Parse(c.msg)
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", c.msg, ev)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not match ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if diff := cmp.Diff(Event{}, ev); diff != "" {
				t.Errorf("an error came with an event:\n%s", diff)
			}
		})
	}
}

// An error quotes at most a bounded part of a hostile message.
func TestParseErrorIsShort(t *testing.T) {
	_, err := Parse(msg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=drm", "SEQNUM="+strings.Repeat("9", 4000)))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error of %d bytes: %v", len(err.Error()), err)
	}
}

func TestRelevant(t *testing.T) {
	ev := func(a Action, subsystem, devName string, env ...string) Event {
		e := Event{Action: a, Subsystem: subsystem, DevName: devName, Env: map[string]string{}}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			e.Env[k] = v
		}
		return e
	}
	for _, c := range []struct {
		ev   Event
		want bool
	}{
		{ev(ActionAdd, "drm", "dri/card0"), true},
		{ev(ActionRemove, "drm", "dri/card12"), true},
		{ev(ActionAdd, "drm", "dri/renderD128"), true},
		{ev(ActionRemove, "drm", "dri/renderD129"), true},
		{ev(ActionChange, "drm", "dri/card0", "HOTPLUG=1"), true},
		{ev(ActionChange, "drm", "dri/card0"), false},
		{ev(ActionChange, "drm", "dri/card0", "HOTPLUG=0"), false},
		{ev(ActionChange, "drm", "dri/card0", "LEASE=1"), false},
		{ev(ActionBind, "drm", "dri/card0"), false},
		{ev(ActionAdd, "drm", ""), false},               // a connector
		{ev(ActionAdd, "drm", "dri/controlD64"), false}, // gone since Linux 4.x
		{ev(ActionAdd, "drm", "dri/card"), false},
		{ev(ActionAdd, "drm", "dri/card0x"), false},
		{ev(ActionAdd, "drm", "card0"), false},
		{ev(ActionAdd, "dma_heap", "dma_heap/system"), true},
		{ev(ActionRemove, "dma_heap", "dma_heap/reserved"), true},
		{ev(ActionChange, "dma_heap", "dma_heap/system"), false},
		{ev(ActionAdd, "dma_heap", ""), false},
		{ev(ActionAdd, "misc", "udmabuf"), true},
		{ev(ActionRemove, "misc", "udmabuf"), true},
		{ev(ActionAdd, "misc", "fuse"), false},
		{ev(ActionAdd, "mem", "null"), false},
		{ev(ActionAdd, "module", ""), false},
		{ev(ActionAdd, "platform", ""), false},
	} {
		if got := Relevant(c.ev); got != c.want {
			t.Errorf("Relevant(%s %s %q %v) = %v, want %v", c.ev.Action, c.ev.Subsystem, c.ev.DevName, c.ev.Env, got, c.want)
		}
	}
}

func TestEventString(t *testing.T) {
	e, err := Parse(msg("change@/devices/platform/vkms/drm/card1",
		"ACTION=change", "DEVPATH=/devices/platform/vkms/drm/card1", "SUBSYSTEM=drm",
		"HOTPLUG=1", "MAJOR=226", "MINOR=1", "DEVNAME=dri/card1", "SEQNUM=42"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.String(), "change /devices/platform/vkms/drm/card1 (drm) dri/card1 226:1 seq 42"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	o := Event{Action: ActionOverflow}
	if got := o.String(); !strings.Contains(got, "lost") {
		t.Errorf("overflow String() = %q", got)
	}
}

func TestMechanismString(t *testing.T) {
	for m, want := range map[Mechanism]string{Auto: "auto", Netlink: "netlink", Inotify: "inotify", 7: "Mechanism(7)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(m), got, want)
		}
	}
}

// The messages captured from real kernels (testdata/fuzz/FuzzParse/linux-*)
// all parse; the forged ones (forged-*) do not.
func TestParseCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(string(data), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")\n")
		if !ok || !ok2 {
			t.Fatalf("%s: not a one-value []byte corpus file", f)
		}
		m, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ev, err := Parse([]byte(m))
		switch name := filepath.Base(f); {
		case strings.HasPrefix(name, "linux-"):
			if err != nil {
				t.Errorf("%s: %v", name, err)
			} else if !strings.Contains(name, "-"+ev.Subsystem+"-"+string(ev.Action)+"-") {
				t.Errorf("%s holds %s", name, &ev)
			}
		case strings.HasPrefix(name, "forged-"):
			if err == nil {
				t.Errorf("%s parsed: %s", name, &ev)
			}
		}
	}
}
