package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/testutil"
)

// serveHeapd runs heapd's server in-process on a temporary socket and
// points HEAPD_SOCKET at it until the test ends.
func serveHeapd(t *testing.T) string {
	t.Helper()
	reg, err := heap.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := daemon.New(daemon.Config{Heaps: reg, Version: "heapd test"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "socket")
	ln, err := daemon.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln.UnixListener) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		ln.Close()
		reg.Close()
	})
	t.Setenv(client.EnvSocket, path)
	return path
}

func TestStatus(t *testing.T) {
	testutil.CheckFDs(t)
	path := serveHeapd(t)
	out, err := heapctl(t, "status", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var got statusOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.Daemon != "heapd test" || got.Socket != path || got.Protocol != "1.0" || len(got.Heaps) == 0 || got.Me == nil || got.Me.Comm == "" {
		t.Errorf("status %+v", got)
	}
	out, err = heapctl(t, "status")
	if err != nil || !strings.Contains(out, "daemon:   heapd test") || !strings.Contains(out, "as heapd sees you") {
		t.Errorf("status table: %v\n%s", err, out)
	}
}

func TestStatusNoDaemon(t *testing.T) {
	testutil.CheckFDs(t)
	t.Setenv(client.EnvSocket, filepath.Join(t.TempDir(), "none"))
	if out, err := heapctl(t, "status"); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("status without heapd: %v\n%s", err, out)
	}
}

// With heapd reachable, heaps and alloc go through it, and -v says so.
func TestThroughHeapd(t *testing.T) {
	testutil.CheckFDs(t)
	serveHeapd(t)
	out, err := heapctl(t, "-v", "heaps")
	if err != nil || !strings.Contains(out, "using heapd") || !strings.Contains(out, "system") {
		t.Errorf("heaps: %v\n%s", err, out)
	}
	out, err = heapctl(t, "-v", "alloc", "--all", "--size", "64KiB", "-o", "json")
	if err != nil {
		t.Fatalf("alloc: %v\n%s", err, out)
	}
	if !strings.Contains(out, "using heapd") {
		t.Errorf("-v does not say heapd is used:\n%s", out)
	}
	js := out[strings.Index(out, "["):]
	js = js[:strings.LastIndex(js, "]")+1]
	var rs []allocResult
	if err := json.Unmarshal([]byte(js), &rs); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, r := range rs {
		if !r.Verified || r.Size != 64<<10 || !strings.HasPrefix(r.Name, "heapd:uid") {
			t.Errorf("%s: %+v", r.Heap, r)
		}
	}
	out, err = heapctl(t, "alloc", "--width", "640", "--height", "480", "-o", "json")
	if err != nil || !strings.Contains(out, `"pitch": 2560`) {
		t.Errorf("image through heapd: %v\n%s", err, out)
	}
}

func TestLibraryWithoutHeapd(t *testing.T) {
	testutil.CheckFDs(t)
	t.Setenv(client.EnvSocket, filepath.Join(t.TempDir(), "none"))
	out, err := heapctl(t, "-v", "heaps")
	if err != nil || !strings.Contains(out, "using the library directly") {
		t.Errorf("heaps: %v\n%s", err, out)
	}
}
