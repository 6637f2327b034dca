package uevent

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse feeds Parse arbitrary bytes. Its seed corpus in
// testdata/fuzz/FuzzParse holds messages captured from real kernels (the
// VM tier's 6.1 and 6.12 loading and unloading vkms and vgem, and this
// project's synthetic uevents) plus forgeries. Parse must not panic, must
// fail only with ErrMalformed, and what it accepts must hold together and
// survive a round trip.
func FuzzParse(f *testing.F) {
	f.Add(msg("add@/devices/virtual/mem/null", "ACTION=add", "DEVPATH=/devices/virtual/mem/null",
		"SUBSYSTEM=mem", "SYNTH_UUID=0", "MAJOR=1", "MINOR=3", "DEVNAME=null", "DEVMODE=0666", "SEQNUM=1"))
	f.Add([]byte("libudev\x00\xfe\xed\xca\xfe"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if ev.Action == "" || ev.Action == ActionOverflow || !strings.HasPrefix(ev.DevPath, "/") || ev.Subsystem == "" {
			t.Fatalf("accepted an incomplete event: %+v", ev)
		}
		if ev.DevName != "" && !validDevName(ev.DevName) {
			t.Fatalf("accepted DEVNAME %q", ev.DevName)
		}
		if !ev.HasDevnum() && (ev.Major != 0 || ev.Minor != 0) {
			t.Fatalf("device number without MAJOR: %+v", ev)
		}
		_ = ev.String()
		_ = Relevant(ev)
		again, err := Parse(encode(ev))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", encode(ev), err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
