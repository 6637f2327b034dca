package drm

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/testutil"
)

// A pipe's read end stands in for a sync_file: readable means signalled.
func pipeFence(t *testing.T) (*Fence, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := dupFD(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err := newFence(fd)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); w.Close() })
	return f, w
}

func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) { nfd, derr = dupCloexec(int(fd)) })
	if err == nil {
		err = derr
	}
	return nfd, err
}

func TestFenceWait(t *testing.T) {
	testutil.CheckFDs(t)
	f, w := pipeFence(t)
	if ok, err := f.Signaled(); ok || err != nil {
		t.Fatalf("Signaled before = %v, %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := f.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an unsignalled fence: %v, want DeadlineExceeded", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); ccancel() }()
	if err := f.Wait(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait cancelled: %v, want Canceled", err)
	}
	go func() { time.Sleep(10 * time.Millisecond); w.Write([]byte{1}) }()
	if err := f.Wait(context.Background()); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := f.Wait(context.Background()); err != nil {
		t.Fatalf("second Wait: %v", err)
	}
	if ok, err := f.Signaled(); !ok || err != nil {
		t.Errorf("Signaled after = %v, %v", ok, err)
	}
	if f.FD() < 0 {
		t.Error("FD < 0 before Close")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if f.FD() != -1 {
		t.Error("FD after Close")
	}
	if err := f.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v", err)
	}
	if _, err := f.Signaled(); !errors.Is(err, ErrClosed) {
		t.Errorf("Signaled after Close: %v", err)
	}
	var nilf *Fence
	if nilf.Close() != nil || nilf.FD() != -1 || !errors.Is(nilf.Wait(context.Background()), ErrClosed) {
		t.Error("nil Fence")
	}
}

// Close wakes a Wait blocked in another goroutine.
func TestFenceCloseDuringWait(t *testing.T) {
	testutil.CheckFDs(t)
	f, _ := pipeFence(t)
	done := make(chan error)
	go func() { done <- f.Wait(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Wait during Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
}

func TestParseFormatList(t *testing.T) {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, uint32(FormatXRGB8888))
	binary.NativeEndian.PutUint32(b[4:], uint32(FormatRGB565))
	got, err := parseFormatList(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Format{FormatXRGB8888, FormatRGB565}, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if _, err := parseFormatList(b[:5]); err == nil {
		t.Error("accepted 5 bytes")
	}
}

func TestParseEvents(t *testing.T) {
	b := make([]byte, 32)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 2)
	ne.PutUint32(b[4:], 32)
	ne.PutUint64(b[8:], 9)
	ne.PutUint32(b[16:], 3)
	ne.PutUint32(b[20:], 250)
	ne.PutUint32(b[24:], 41)
	ne.PutUint32(b[28:], 35)
	got, err := ParseEvents(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{Type: EventFlipComplete, UserData: 9, CRTCID: 35, Sequence: 41, Time: 3*time.Second + 250*time.Microsecond}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if _, err := ParseEvents(b[:20]); err == nil {
		t.Error("accepted a truncated event")
	}
	if EventFlipComplete.String() != "flip-complete" || EventType(9).String() != "EventType(0x9)" {
		t.Error("EventType strings")
	}
}

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }
