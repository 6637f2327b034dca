package client

import (
	"context"
	"fmt"

	"github.com/heapd/heapd/protocol"
)

// Watch subscribes to the event classes in mask on a connection of its
// own and calls fn for every event, in order, until ctx ends (Watch then
// returns ctx.Err()), fn returns an error (returned as is), or the
// connection is lost (an error wrapping ErrDisconnected: call Watch again
// to resubscribe, and list heaps again since events may have been
// missed). An EventOverflow event means the daemon dropped events because
// fn was too slow: list again. fn runs on the calling goroutine.
//
// ready, if not nil, is called once the subscription is in place (so a
// caller knows no event after that point is missed).
func (c *Client) Watch(ctx context.Context, mask protocol.EventMask, ready func(), fn func(protocol.Event) error) error {
	pc, err := dialSocket(ctx, c.SocketPath())
	if err != nil {
		return err
	}
	defer pc.Close()
	features := c.Features
	if features == 0 {
		features = protocol.AllFeatures
	}
	info, err := handshake(ctx, pc, features)
	if err != nil {
		return err
	}
	if info.Features&protocol.FeatureEvents == 0 {
		return fmt.Errorf("client: the daemon (%s) does not offer events: %w", info.Version, protocol.CodeNotSupported)
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	if err := pc.Send(2, &protocol.Subscribe{Mask: mask}, nil); err != nil {
		return watchErr(ctx, err)
	}
	for {
		h, m, fds, err := pc.Recv()
		protocol.CloseFDs(fds)
		if err != nil {
			return watchErr(ctx, err)
		}
		switch m := m.(type) {
		case *protocol.Subscribed:
			if ready != nil {
				ready()
			}
		case *protocol.Event:
			if err := fn(*m); err != nil {
				return err
			}
		case *protocol.Error:
			return m
		default:
			return fmt.Errorf("client: watch: unexpected %s (serial %d): %w", h.Type, h.Serial, protocol.ErrMalformed)
		}
	}
}

func watchErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, err)
}
