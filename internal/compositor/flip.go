package compositor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
)

// FlipStats report a flip loop: how fast frames reached the screen,
// against the mode's refresh rate (one flip per vblank at best).
type FlipStats struct {
	Frames int `json:"frames"`
	// Elapsed is the wall-clock time from the first commit to the last
	// flip-complete event.
	Elapsed time.Duration `json:"elapsed_ns"`
	// FlipsPerSecond is Frames / Elapsed.
	FlipsPerSecond float64 `json:"flips_per_second"`
	// KernelFlipsPerSecond is the rate by the kernel's vblank timestamps
	// of the flip events (first to last), free of this process's
	// scheduling delays; 0 with fewer than two timestamped events.
	KernelFlipsPerSecond float64 `json:"kernel_flips_per_second"`
	// RefreshHz is the mode's refresh rate.
	RefreshHz float64 `json:"refresh_hz"`
	// Vblanks is the number of vblanks between the first and the last
	// flip (by the events' sequence numbers); Frames-1 when no vblank was
	// missed.
	Vblanks uint64 `json:"vblanks"`
	// Missed counts flips that landed more than one vblank after the
	// previous one.
	Missed int `json:"missed"`
	// Busy counts non-blocking commits the kernel refused with EBUSY
	// (the previous flip not yet done) and that were retried.
	Busy int `json:"busy"`
}

// String returns "120 flips in 2.01s: 59.7 flips/s (kernel 60.0) at 60.00 Hz, 0 missed".
func (f FlipStats) String() string {
	return fmt.Sprintf("%d flips in %v: %.1f flips/s (kernel %.1f) at %.2f Hz, %d missed", f.Frames, f.Elapsed.Round(time.Millisecond), f.FlipsPerSecond, f.KernelFlipsPerSecond, f.RefreshHz, f.Missed)
}

// Flip flips the Screen's primary plane between the buffers of swapchain
// (all in layout l, which must have the mode's size) for frames frames:
// each frame is a non-blocking commit of the next buffer with a page-flip
// event, and the next commit waits for that event, as a compositor with
// triple buffering does when it has nothing else to do. Afterwards the
// buffer Show put up is shown again. The swapchain buffers are imported
// for the call and released on every path; they are not taken over.
//
// A frame whose event does not come within a second fails the loop
// (vkms's vblank timer stopped?); ctx bounds the whole loop.
func (s *Screen) Flip(ctx context.Context, swapchain []*dmabuf.Buffer, l drm.Layout, frames int) (st FlipStats, err error) {
	if err := s.lock(); err != nil {
		return st, err
	}
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("compositor: Flip: %w", err)
	}
	if len(swapchain) == 0 || frames <= 0 {
		return st, fmt.Errorf("compositor: Flip: %d buffers, %d frames: need at least one of each", len(swapchain), frames)
	}
	st.RefreshHz = s.mode.Refresh()
	fbs := make([]*drm.Framebuffer, len(swapchain))
	for i, buf := range swapchain {
		if buf == nil {
			return st, fmt.Errorf("compositor: Flip: swapchain buffer %d is nil: %w", i, drm.ErrClosed)
		}
		// Loop-local errors must not shadow err: the deferred Closes
		// below report into the named result.
		bl, lerr := l.Validate(buf.Size())
		if lerr != nil {
			return st, fmt.Errorf("compositor: Flip: buffer %d: %w", i, lerr)
		}
		if w, h := s.mode.Size(); bl.Width != w || bl.Height != h {
			return st, fmt.Errorf("compositor: Flip: %w: %dx%d, the plane must cover the mode's %dx%d", drm.ErrBadLayout, bl.Width, bl.Height, w, h)
		}
		h, lerr := s.dev.Import(buf)
		if lerr != nil {
			return st, fmt.Errorf("compositor: Flip: buffer %d: %w", i, lerr)
		}
		fb, lerr := s.dev.AddFB2(h, bl)
		closeInto(&lerr, h) // the framebuffer keeps the buffer
		if lerr != nil {
			fb.Close()
			return st, fmt.Errorf("compositor: Flip: buffer %d: %w", i, lerr)
		}
		fbs[i] = fb
		defer closeInto(&err, fb)
	}
	events, err := s.dev.Events()
	if err != nil {
		return st, fmt.Errorf("compositor: Flip: %w", err)
	}
	defer closeInto(&err, events)
	defer func() {
		// Show's buffer again, so removing the swapchain's framebuffers
		// does not switch the plane off. A blocking commit waits for any
		// flip still pending.
		var r drm.AtomicRequest
		s.setPlane(&r, s.fb)
		if _, rerr := s.dev.AtomicCommit(&r, 0); rerr != nil && err == nil {
			err = fmt.Errorf("compositor: Flip: showing the original buffer again: %w", rerr)
		}
	}()

	var first, last drm.Event
	start := time.Now()
	for i := range frames {
		var r drm.AtomicRequest
		r.SetProperty(s.planeP, "FB_ID", uint64(fbs[i%len(fbs)].ID()))
		s.flips++ // unique across Flip calls: a stale event never matches
		r.UserData = s.flips
		if err := s.commitFlip(ctx, &r, &st); err != nil {
			return st, fmt.Errorf("compositor: Flip: frame %d: %w", i, err)
		}
		e, err := waitFlip(ctx, events, r.UserData)
		if err != nil {
			return st, fmt.Errorf("compositor: Flip: frame %d: %w", i, err)
		}
		if i == 0 {
			first = e
		} else if e.Sequence > last.Sequence+1 {
			st.Missed++
		}
		last = e
	}
	st.Elapsed = time.Since(start)
	st.Frames = frames
	st.FlipsPerSecond = float64(frames) / st.Elapsed.Seconds()
	if last.Sequence >= first.Sequence {
		st.Vblanks = last.Sequence - first.Sequence
	}
	if d := last.Time - first.Time; frames > 1 && first.Time > 0 && d > 0 {
		st.KernelFlipsPerSecond = float64(frames-1) / d.Seconds()
	}
	return st, nil
}

// commitFlip commits r non-blocking with a flip event, retrying while the
// kernel says the previous flip is still in progress (EBUSY).
func (s *Screen) commitFlip(ctx context.Context, r *drm.AtomicRequest, st *FlipStats) error {
	for {
		_, err := s.dev.AtomicCommit(r, drm.AtomicNonblock|drm.AtomicPageFlipEvent)
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		st.Busy++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// waitFlip reads events until the flip-complete event carrying user data
// arrives (others, from earlier commits, are skipped).
func waitFlip(ctx context.Context, events *drm.EventReader, user uint64) (drm.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		e, err := events.Read(ctx)
		if err != nil {
			return e, err
		}
		if e.Type == drm.EventFlipComplete && e.UserData == user {
			return e, nil
		}
	}
}
