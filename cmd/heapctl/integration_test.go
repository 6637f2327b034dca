package main

import (
	"encoding/json"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestIntegrationDevicesRoles(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedPath(t, "/sys/module/vgem", "vgem not loaded (CONFIG_DRM_VGEM)?")
	out, err := heapctl(t, "devices", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rows []deviceRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	roles := map[string]string{}
	for _, r := range rows {
		roles[r.Driver] = r.Role
		if r.Driver == "vkms" {
			var primary bool
			for _, p := range r.Planes {
				if p.Type == "primary" && p.XRGB8888Lin {
					primary = true
				}
			}
			if !primary {
				t.Errorf("vkms has no primary plane taking XR24 LINEAR: %+v", r.Planes)
			}
		}
	}
	if roles["vkms"] != "display" || roles["vgem"] != "render-only" {
		t.Errorf("roles = %v, want vkms display and vgem render-only\n%s", roles, out)
	}
	if _, err := heapctl(t, "devices"); err != nil {
		t.Error(err)
	}
}

func TestIntegrationResolveAndImageAlloc(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.CheckFDs(t)
	out, err := heapctl(t, "resolve", "vkms")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Log(out)
	out, err = heapctl(t, "alloc", "--heap", "scanout", "--width", "1024", "--height", "768", "--format", "XR24", "--device", "vgem", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rs []allocResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rs) != 1 || !rs[0].Verified || rs[0].Layout == nil || rs[0].Layout.Pitch != 4096 || rs[0].Exporter != "reserved" {
		t.Errorf("scanout image allocation: %s", out)
	}
}
