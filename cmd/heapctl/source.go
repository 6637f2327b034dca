package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/protocol"
)

// source is where heapctl gets heaps and buffers: heapd, when its socket
// answers, else the library directly (which needs access to the heap
// devices). -v says which and why.
type source interface {
	// list returns the published heaps and the backends that could not
	// be used.
	list(ctx context.Context) ([]heap.Info, []string, error)
	// allocate serves req (req.Name "" means the default name). The
	// Allocation's Buffer is owned by the caller; backend names the
	// mechanism of the heap that supplied it.
	allocate(ctx context.Context, req heap.Request) (*heap.Allocation, heap.Backend, error)
	Close() error
}

// dialTimeout bounds the reachability check of heapd's socket.
const dialTimeout = 2 * time.Second

// openSource returns heapd when its socket ($HEAPD_SOCKET, or
// /run/heapd/socket) answers, else the library. --root (captured trees)
// always means the library.
func (g *globals) openSource(ctx context.Context) (source, error) {
	log := g.logger()
	if g.root == "" {
		c := &client.Client{}
		cctx, cancel := context.WithTimeout(ctx, dialTimeout)
		info, err := c.Info(cctx)
		cancel()
		if err == nil {
			log.Info("using heapd", "socket", c.SocketPath(), "daemon", info.Version)
			return &daemonSource{c: c}, nil
		}
		c.Close()
		if errors.Is(err, client.ErrNoDaemon) {
			log.Info("heapd not running; using the library directly", "socket", c.SocketPath())
		} else {
			log.Warn("heapd did not answer; using the library directly", "socket", c.SocketPath(), "err", err)
		}
	}
	reg, err := g.openRegistry()
	if err != nil {
		return nil, err
	}
	return libSource{reg}, nil
}

type libSource struct{ reg *heap.Registry }

func (s libSource) list(context.Context) ([]heap.Info, []string, error) {
	return s.reg.List(), s.reg.Problems(), nil
}

func (s libSource) allocate(ctx context.Context, req heap.Request) (*heap.Allocation, heap.Backend, error) {
	if req.Name == "" {
		req.Name = "heapctl"
	}
	a, err := s.reg.Allocate(ctx, req)
	if err != nil {
		return a, "", err
	}
	var backend heap.Backend
	if h, err := s.reg.Get(a.Heap); err == nil {
		backend = h.Info().Backend
	} else if len(a.Attempts) > 0 {
		backend = a.Attempts[len(a.Attempts)-1].Backend
	}
	return a, backend, nil
}

func (s libSource) Close() error { return s.reg.Close() }

type daemonSource struct{ c *client.Client }

func (s *daemonSource) list(ctx context.Context) ([]heap.Info, []string, error) {
	hs, problems, err := s.c.Heaps(ctx)
	if err != nil {
		return nil, nil, err
	}
	infos := make([]heap.Info, len(hs))
	for i, h := range hs {
		infos[i] = daemon.HeapFromWire(h)
	}
	return infos, problems, nil
}

func (s *daemonSource) allocate(ctx context.Context, req heap.Request) (*heap.Allocation, heap.Backend, error) {
	if req.NonContiguousFallback {
		return nil, "", fmt.Errorf("--fallback-noncontiguous is not offered through heapd; stop heapd or leave the flag out")
	}
	creq := client.Request{Heap: req.Heap, Devices: req.Devices, Size: req.Size, Label: req.Name}
	if req.Image != nil {
		f := req.Image.Format
		if f == 0 {
			f = drm.FormatXRGB8888
		}
		creq.Size = 0
		creq.Image = &protocol.Image{Width: req.Image.Width, Height: req.Image.Height, Format: uint32(f), Modifier: uint64(req.Image.Modifier)}
	}
	a, err := s.c.Allocate(ctx, creq)
	if err != nil {
		return nil, "", err
	}
	out := &heap.Allocation{Buffer: a.Buffers[0], Heap: a.Heap}
	if req.Image != nil {
		out.Layout = &drm.Layout{Width: a.Layout.Width, Height: a.Layout.Height, Format: drm.Format(a.Layout.Format),
			Pitch: a.Layout.Pitch, Offset: a.Layout.Offset, Modifier: drm.Modifier(a.Layout.Modifier)}
	}
	return out, heap.Backend(a.Backend), nil
}

func (s *daemonSource) Close() error { return s.c.Close() }
