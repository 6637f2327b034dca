package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/uevent"
)

// openHotplug opens the device-event listener the --hotplug flag asks for
// and logs which mechanism is in use. "off" gives a nil Listener (Close on
// it is a no-op).
func openHotplug(mode string, log *slog.Logger) (*uevent.Listener, error) {
	var m uevent.Mechanism
	switch mode {
	case "auto":
		m = uevent.Auto
	case "netlink":
		m = uevent.Netlink
	case "inotify":
		m = uevent.Inotify
	case "off":
		log.Info("hotplug: off; devices are discovered at start and on SIGHUP only")
		return nil, nil
	default:
		return nil, fmt.Errorf("--hotplug %q: want auto, netlink, inotify or off", mode)
	}
	l, err := uevent.Open(&uevent.Config{Mechanism: m})
	if err != nil {
		if mode == "auto" {
			log.Warn("hotplug: no device events; devices are discovered at start and on SIGHUP only", "err", err)
			return nil, nil
		}
		return nil, fmt.Errorf("--hotplug %s: %w", mode, err)
	}
	log.Info("hotplug: following devices", "mechanism", l.String())
	return l, nil
}

// settle coalesces a burst of device events (a driver load emits several)
// into one re-discovery.
const settle = 100 * time.Millisecond

// followDevices re-discovers heaps after device events and tells
// subscribed clients what was published and retired (srv.Rescan). It
// returns when ctx ends or the listener stops.
func followDevices(ctx context.Context, l *uevent.Listener, srv *daemon.Server, log *slog.Logger) {
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-l.Events():
			if !ok {
				if err := l.Err(); err != nil {
					log.Error("hotplug: device events stopped; restart heapd or send SIGHUP after device changes", "err", err)
				}
				return
			}
			log.Debug("device event", "action", ev.Action, "subsystem", ev.Subsystem, "dev", ev.DevName)
			if timer == nil {
				timer = time.After(settle)
			}
		case <-timer:
			timer = nil
			if err := srv.Rescan(); err != nil {
				log.Error("re-discovering heaps after a device event failed", "err", err)
			}
		}
	}
}
