package uevent

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/heapd/heapd/internal/testutil"
)

// openEach opens a Listener with each mechanism: inotify on a temporary
// tree always, netlink where the kernel allows it.
func openEach(t *testing.T, f func(t *testing.T, l *Listener)) {
	for _, m := range []Mechanism{Inotify, Netlink} {
		t.Run(m.String(), func(t *testing.T) {
			testutil.CheckFDs(t)
			var l *Listener
			if m == Netlink {
				l = openNetlinkOrSkip(t, nil)
			} else {
				var err error
				if l, err = Open(&Config{Mechanism: m, DevDir: t.TempDir()}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			}
			if l.Mechanism() != m {
				t.Fatalf("Mechanism() = %v, want %v", l.Mechanism(), m)
			}
			f(t, l)
		})
	}
}

// Close unblocks a Next waiting in another goroutine, closes the channel,
// and may be called again.
func TestCloseUnblocks(t *testing.T) {
	openEach(t, func(t *testing.T, l *Listener) {
		errc := make(chan error, 1)
		go func() {
			_, err := l.Next(context.Background())
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond) // let Next block
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Next after Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock Next")
		}
		select {
		case _, ok := <-l.Events():
			if ok {
				t.Error("an event after Close")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Events not closed after Close")
		}
		if err := l.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := l.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
		if err := l.Err(); err != nil {
			t.Errorf("Err after Close: %v, want nil", err)
		}
	})
}

// Close does not wait for a consumer that never reads.
func TestCloseWithoutConsumer(t *testing.T) {
	openEach(t, func(t *testing.T, l *Listener) {
		done := make(chan struct{})
		go func() { l.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close hangs")
		}
	})
}

func TestNextContext(t *testing.T) {
	openEach(t, func(t *testing.T, l *Listener) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := l.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Next with a cancelled context: %v", err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := l.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Next with a deadline: %v", err)
		}
	})
}

func TestNilListener(t *testing.T) {
	var l *Listener
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := l.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next: %v", err)
	}
	if _, ok := <-l.Events(); ok {
		t.Error("Events yielded an event")
	}
	if l.Err() != nil || l.Stats() != (Stats{}) || l.Mechanism() != Auto || l.String() == "" {
		t.Error("nil Listener accessors")
	}
}

func TestOpenErrors(t *testing.T) {
	testutil.CheckFDs(t)
	if _, err := Open(&Config{ReceiveBuffer: -1}); err == nil {
		t.Error("negative receive buffer accepted")
	}
	if _, err := Open(&Config{Mechanism: 9}); err == nil {
		t.Error("unknown mechanism accepted")
	}
	missing := filepath.Join(t.TempDir(), "nodev")
	_, err := Open(&Config{Mechanism: Inotify, DevDir: missing})
	var perr *fs.PathError
	if !errors.As(err, &perr) || perr.Path != missing || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("inotify on a missing directory: %v, want a *PathError naming it", err)
	}
}
