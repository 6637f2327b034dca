package drm

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseNodeDevName(t *testing.T) {
	for _, tc := range []struct{ uevent, want string }{
		{"MAJOR=226\nMINOR=0\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n", "dri/card0"},
		{"MAJOR=226\n", "dri/card7"},
		{"DEVNAME=\n", "dri/card7"},
		{"DEVNAME=../../etc/shadow\n", "dri/card7"},
		{"DEVNAME=/etc/shadow\n", "dri/card7"},
		{"DEVNAME=dri/../../x\n", "dri/card7"},
		{"DEVNAME=.\n", "dri/card7"},
		{"DEVNAME=dri/..\n", "dri/card7"},
		{"  DEVNAME=dri/renderD128  \n", "dri/renderD128"},
	} {
		if got := parseNodeDevName(tc.uevent, "card7"); got != tc.want {
			t.Errorf("parseNodeDevName(%q) = %q, want %q", tc.uevent, got, tc.want)
		}
	}
}

// FuzzParseNodeSysfs: the dev and uevent attribute parsers of a DRM node
// never panic, a parsed "dev" prints back to itself, and the node path
// built from DEVNAME never leaves the device root.
func FuzzParseNodeSysfs(f *testing.F) {
	f.Add("226:0", "MAJOR=226\nMINOR=0\nDEVNAME=dri/card0\nDEVTYPE=drm_minor\n")
	f.Add("226:128", "MAJOR=226\nMINOR=128\nDEVNAME=dri/renderD128\n")
	f.Add("", "")
	f.Add("226", "DEVNAME=../../etc/shadow\n")
	f.Add("4294967296:1", "DEVNAME=/dev/mem\n")
	f.Add("-1:-1", "DEVNAME=dri/..\nDEVNAME=\x00\n")
	f.Fuzz(func(t *testing.T, dev, uevent string) {
		major, minor := parseNodeDev(dev)
		if major != 0 || minor != 0 {
			again := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
			if a, b := parseNodeDev(again); a != major || b != minor {
				t.Fatalf("parseNodeDev(%q) = %d:%d; %q gives %d:%d", dev, major, minor, again, a, b)
			}
		}
		const root = "/dev"
		p := filepath.Join(root, parseNodeDevName(uevent, "card0"))
		if !strings.HasPrefix(p, root+"/") {
			t.Fatalf("uevent %q puts the node at %q, outside %s", uevent, p, root)
		}
	})
}
