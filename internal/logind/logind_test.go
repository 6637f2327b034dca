package logind_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/internal/logind"
	"github.com/heapd/heapd/internal/logind/logindtest"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// No bus at the address: unavailable, not a failure.
func TestNoBus(t *testing.T) {
	c := logind.New(&logind.Config{Address: "unix:path=" + filepath.Join(t.TempDir(), "nothing")})
	defer c.Close()
	_, err := c.Presence(ctxT(t), 1000)
	if !errors.Is(err, logind.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

// A bus without logind on it (a container with D-Bus, say): unavailable.
func TestBusWithoutLogind(t *testing.T) {
	addr := logindtest.StartBus(t)
	if addr == "" {
		return // VM tier: no D-Bus there; TestNoBus is that case
	}
	c := logind.New(&logind.Config{Address: addr})
	defer c.Close()
	_, err := c.Presence(ctxT(t), 1000)
	if !errors.Is(err, logind.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

func TestFakeLogind(t *testing.T) {
	addr := logindtest.StartBus(t)
	if addr == "" {
		return
	}
	fake := logindtest.Serve(t, addr,
		logindtest.Session{ID: "1", UID: 1000, User: "alice", Seat: "seat0", Active: true},
		logindtest.Session{ID: "2", UID: 1001, User: "bob", Active: true},                    // seatless (e.g. a VT-less session)
		logindtest.Session{ID: "3", UID: 1002, User: "carol", Seat: "seat0", Active: false},  // switched away
		logindtest.Session{ID: "4", UID: 1003, User: "dave", Active: true, Remote: true},     // ssh
		logindtest.Session{ID: "c5", UID: 1000, User: "alice", Active: false, Class: "user"}, // a second, inactive one
	)
	c := logind.New(&logind.Config{Address: addr})
	defer c.Close()
	for _, tc := range []struct {
		uid  uint32
		want logind.Presence
	}{
		{1000, logind.Presence{Active: true, Seat: true, Sessions: []string{"1"}}},
		{1001, logind.Presence{Active: true, Sessions: []string{"2"}}},
		{1002, logind.Presence{}},
		{1003, logind.Presence{}},
		{4242, logind.Presence{}},
	} {
		got, err := c.Presence(ctxT(t), tc.uid)
		if err != nil {
			t.Fatalf("uid %d: %v", tc.uid, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("uid %d (-want +got):\n%s", tc.uid, diff)
		}
	}
	// Sessions change: the next question sees it.
	fake.SetSessions(logindtest.Session{ID: "9", UID: 1002, User: "carol", Seat: "seat0", Active: true})
	got, err := c.Presence(ctxT(t), 1002)
	if err != nil || !got.Active || !got.Seat {
		t.Errorf("after change: %+v %v", got, err)
	}
	if got, _ := c.Presence(ctxT(t), 1000); got.Active {
		t.Errorf("alice still active after her sessions ended: %+v", got)
	}
}
