package uevent_test

import (
	"context"
	"log/slog"

	"github.com/heapd/heapd/internal/uevent"
)

// The registry's loop: open first, then scan, then follow events; rescan
// after an overflow.
func Example() {
	ctx := context.Background()
	log := slog.Default()
	scan := func() { /* list /dev/dri, /dev/dma_heap, /dev/udmabuf */ }

	l, err := uevent.Open(nil) // Auto, default filter
	if err != nil {
		log.Error("no device events", "err", err)
		return
	}
	defer l.Close()
	log.Info("following devices", "mechanism", l.Mechanism(), "how", l.String())

	scan()
	for {
		ev, err := l.Next(ctx)
		if err != nil {
			log.Error("device events stopped", "err", err)
			return
		}
		switch {
		case ev.Action == uevent.ActionOverflow:
			scan()
		case ev.Subsystem == "drm" && ev.Action == uevent.ActionRemove:
			log.Info("device gone", "node", "/dev/"+ev.DevName, "devpath", ev.DevPath)
		default:
			log.Info("device event", "event", ev.String())
		}
	}
}
