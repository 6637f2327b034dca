package uapi

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCString(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte{0}, ""},
		{[]byte("vkms"), "vkms"},
		{[]byte("vkms\x00\x00junk"), "vkms"},
	} {
		if got := cString(tc.in); got != tc.want {
			t.Errorf("cString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The wrappers must report the kernel's refusal on a non-DRM fd as the
// ioctl's errno, not crash on the pointer plumbing.
func TestDRMWrappersOnNonDRMFD(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for name, call := range map[string]func() error{
		"version":   func() error { _, err := DRMVersionQuery(fd); return err },
		"resources": func() error { _, err := DRMModeGetResourcesIDs(fd); return err },
		"planes":    func() error { _, err := DRMModeGetPlaneIDs(fd); return err },
		"plane":     func() error { _, _, err := DRMModeGetPlaneInfo(fd, 1); return err },
		"props":     func() error { _, _, err := DRMModeObjGetPropertyList(fd, 1, DRMModeObjectPlane); return err },
		"property":  func() error { _, err := DRMModeGetPropertyInfo(fd, 1); return err },
		"blob":      func() error { _, err := DRMModeGetPropBlobData(fd, 1); return err },
	} {
		if err := call(); !errors.Is(err, unix.ENOTTY) {
			t.Errorf("%s on %s: err = %v, want ENOTTY", name, os.DevNull, err)
		}
	}
}
