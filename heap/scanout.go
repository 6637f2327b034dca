package heap

import (
	"fmt"
	"log/slog"
)

// publishScanout adds scanout/<id> for every resolved display device and
// scanout for the default one: the first resolved display by id (ids are
// stable, so the default is too).
func publishScanout(heaps map[string]Heap, f *Found, resolutions []Resolution, log *slog.Logger) {
	byID := map[string]Device{}
	for _, d := range f.Devices {
		byID[d.Info().ID] = d
	}
	for _, res := range resolutions {
		dev := byID[res.Device]
		if res.Heap == "" || dev == nil {
			log.Warn("no scanout heap for display device", "device", res.Device, "driver", res.Driver, "why", res.Error)
			continue
		}
		var target Heap
		cands, _ := candidates(f, dev)
		for _, c := range cands {
			if c.name == res.Heap {
				target = c.heap
			}
		}
		if target == nil {
			continue
		}
		name := "scanout/" + res.Device
		heaps[name] = alias{name: name, h: target, device: res.Device,
			note: fmt.Sprintf("%s; probed on %s (%s): PRIME import + ADDFB2 passed", res.Heap, res.Device, res.Driver)}
		if _, ok := heaps["scanout"]; !ok {
			heaps["scanout"] = alias{name: "scanout", h: target, device: res.Device,
				note: fmt.Sprintf("default display %s (%s): %s", res.Device, res.Driver, res.Heap)}
		}
		log.Info("scanout heap resolved", "device", res.Device, "driver", res.Driver, "heap", res.Heap)
	}
}
