package main

import (
	"testing"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

// TestIntegrationExampleScanout runs the example's whole flow (allocate for
// {vkms, vgem}, import into vgem, fill, show, capture, compare) against a
// heapd of its own.
func TestIntegrationExampleScanout(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedPath(t, "/sys/module/vgem", "vgem not loaded (CONFIG_DRM_VGEM)?")
	testutil.NeedRoot(t)
	d := daemontest.Start(t, nil)
	t.Setenv(client.EnvSocket, d.Socket)
	testutil.CheckFDs(t)
	if err := run("vkms", "vgem", "", 1024, 768, true); err != nil {
		t.Fatal(err)
	}
}
