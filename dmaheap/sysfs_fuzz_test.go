package dmaheap

import (
	"strconv"
	"testing"
)

// FuzzParseDevNum: the sysfs "major:minor" parser never panics, and what
// it accepts is two decimal numbers that fit 32 bits and print back to
// the same values.
func FuzzParseDevNum(f *testing.F) {
	for _, s := range []string{"10:126", "10:257", "253:0", "0:0", "4294967295:4294967295",
		"4294967296:0", ":", "1:", ":1", "1:2:3", "-1:2", "+1:2", " 1:2", "1:2\n", "0x1:2", "", "१:२"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		major, minor, ok := parseDevNum(s)
		if !ok {
			if major != 0 || minor != 0 {
				t.Fatalf("parseDevNum(%q) failed but returned %d:%d", s, major, minor)
			}
			return
		}
		again := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
		ma, mi, ok := parseDevNum(again)
		if !ok || ma != major || mi != minor {
			t.Fatalf("parseDevNum(%q) = %d:%d, but %q parses to %d:%d %v", s, major, minor, again, ma, mi, ok)
		}
	})
}
