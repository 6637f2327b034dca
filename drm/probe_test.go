package drm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestProbeResultText(t *testing.T) {
	l := DefaultLayout(1 << 20)
	base := ProbeResult{Device: "/dev/dri/card1", Driver: "vc4", Layout: l}
	importErr := errors.New("ioctl DRM_IOCTL_PRIME_FD_TO_HANDLE: invalid argument")
	for _, tc := range []struct {
		name     string
		res      ProbeResult
		str      string
		jsonText string
	}{
		{
			"ok", func() ProbeResult { r := base; r.OK = true; return r }(),
			"vc4 (/dev/dri/card1): scanout OK (512x512 XR24 LINEAR)",
			`{"device":"/dev/dri/card1","driver":"vc4","layout":{"width":512,"height":512,"format":"XR24","pitch":2048,"offset":0,"modifier":"LINEAR"},"ok":true}`,
		},
		{
			"import", base.fail(StepImport, unix.EINVAL, importErr),
			"vc4 (/dev/dri/card1): import failed (512x512 XR24 LINEAR): EINVAL: " + probeHint(StepImport, unix.EINVAL),
			`{"device":"/dev/dri/card1","driver":"vc4","layout":{"width":512,"height":512,"format":"XR24","pitch":2048,"offset":0,"modifier":"LINEAR"},"ok":false,` +
				`"failed_step":"import","errno":22,"error":"ioctl DRM_IOCTL_PRIME_FD_TO_HANDLE: invalid argument","hint":"` + probeHint(StepImport, unix.EINVAL) + `"}`,
		},
		{
			"plane", base.fail(StepPlane, 0, ErrNotSupported),
			"vc4 (/dev/dri/card1): plane failed (512x512 XR24 LINEAR): unsupported: " + probeHint(StepPlane, 0),
			"",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.str, tc.res.String()); diff != "" {
				t.Errorf("String (-want +got):\n%s", diff)
			}
			if tc.jsonText == "" {
				return
			}
			b, err := json.Marshal(tc.res)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.jsonText, string(b)); diff != "" {
				t.Errorf("JSON (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want unix.Errno
	}{
		{nil, 0},
		{errors.New("x"), 0},
		{wrapSyscall("ioctl DRM_IOCTL_MODE_ADDFB2", unix.EINVAL), unix.EINVAL},
		{wrapSyscall("fcntl F_DUPFD_CLOEXEC", unix.EMFILE), 0}, // not the kernel refusing the step
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func wrapSyscall(name string, errno unix.Errno) error {
	return fmt.Errorf("drm: context: %w", os.NewSyscallError(name, errno))
}
