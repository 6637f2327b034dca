package guestcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestIntegrationGuestDevices(t *testing.T) {
	for _, c := range []struct{ name, path, hint string }{
		{"heap-system", "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?"},
		{"heap-reserved", "/dev/dma_heap/reserved", "no CMA heap: CONFIG_DMABUF_HEAPS_CMA off or no cma= on the kernel command line?"},
		{"udmabuf", "/dev/udmabuf", "kernel built without CONFIG_UDMABUF?"},
		{"bufinfo", "/sys/kernel/debug/dma_buf/bufinfo", "debugfs not mounted, or CONFIG_DEBUG_FS_ALLOW_ALL off?"},
		{"sw_sync", "/sys/kernel/debug/sync/sw_sync", "kernel built without CONFIG_SW_SYNC?"},
		{"sysfs-stats", "/sys/kernel/dmabuf/buffers", "kernel built without CONFIG_DMABUF_SYSFS_STATS?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			testutil.NeedPath(t, c.path, c.hint)
		})
	}

	cards := drmCards(t)
	for _, drv := range []string{"vgem", "vkms"} {
		t.Run(drv, func(t *testing.T) {
			card, ok := cards[drv]
			if !ok {
				testutil.Missing(t, drv+" has no DRM card (module not loaded? CONFIG_DRM_"+strings.ToUpper(drv)+" off?)")
			}
			testutil.NeedPath(t, filepath.Join("/dev/dri", card), "devtmpfs not mounted on /dev?")
			t.Logf("%s is %s", drv, card)
		})
	}
	t.Run("vgem-render-node", func(t *testing.T) {
		if _, ok := cards["vgem"]; !ok {
			testutil.Missing(t, "no vgem card")
		}
		render := renderNodes(t)["vgem"]
		if render == "" {
			testutil.Missing(t, "vgem has no render node")
		}
		testutil.NeedPath(t, filepath.Join("/dev/dri", render), "devtmpfs not mounted on /dev?")
	})
	t.Run("vkms-writeback", func(t *testing.T) {
		card, ok := cards["vkms"]
		if !ok {
			testutil.Missing(t, "no vkms card")
		}
		// /init loads vkms with enable_writeback=1.
		testutil.NeedPath(t, filepath.Join("/sys/class/drm", card+"-Writeback-1"),
			"vkms loaded without enable_writeback=1?")
	})
}

// drmCards maps DRM driver names to card names (card0, …), reading the
// driver name from debugfs (dri/<minor>/name: "vgem dev=vgem unique=vgem"),
// so that card numbers, which follow probe order, never matter.
func drmCards(t *testing.T) map[string]string {
	return drmNodes(t, regexp.MustCompile(`^card[0-9]+$`))
}

func renderNodes(t *testing.T) map[string]string {
	return drmNodes(t, regexp.MustCompile(`^renderD[0-9]+$`))
}

func drmNodes(t *testing.T, re *regexp.Regexp) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir("/sys/class/drm")
	if err != nil {
		return out // no DRM at all: the callers report what is missing
	}
	for _, e := range ents {
		if !re.MatchString(e.Name()) {
			continue
		}
		dev, err := os.ReadFile(filepath.Join("/sys/class/drm", e.Name(), "dev"))
		if err != nil {
			t.Fatal(err)
		}
		_, minor, _ := strings.Cut(strings.TrimSpace(string(dev)), ":")
		name, err := os.ReadFile(filepath.Join("/sys/kernel/debug/dri", minor, "name"))
		if err != nil {
			t.Logf("%s: driver name unknown: %v", e.Name(), err)
			continue
		}
		driver, _, _ := strings.Cut(strings.TrimSpace(string(name)), " ")
		out[driver] = e.Name()
	}
	return out
}
