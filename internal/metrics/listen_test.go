package metrics

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs m.Serve on ln and returns a function that stops it and
// returns Serve's error.
func serve(t *testing.T, m *Metrics, ln net.Listener) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after its context ended")
			return nil
		}
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServeTCP(t *testing.T) {
	m := newTest(t)
	m.AllocResult("system", 0, time.Millisecond)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(t, m, ln)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	base := "http://" + ln.Addr().String()
	code, body := get(t, c, base+Path)
	if code != 200 || !strings.Contains(body, `heapd_allocations_total{heap="system",result="ok"} 1`) {
		t.Errorf("GET %s: %d\n%s", Path, code, body)
	}
	if code, body := get(t, c, base+"/"); code != 200 || !strings.Contains(body, Path) {
		t.Errorf("GET /: %d %q", code, body)
	}
	if code, _ := get(t, c, base+"/nothing"); code != 404 {
		t.Errorf("GET /nothing: %d", code)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still listening after Serve returned")
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func TestServeUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "metrics")
	m := newTest(t)
	m.ClientConnected(1)
	ln, err := Listen(UnixPrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != fs.ModeSocket || st.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %v, want socket %v", st.Mode(), fs.FileMode(SocketMode))
	}
	stop := serve(t, m, ln)
	code, body := get(t, unixClient(path), "http://heapd"+Path)
	if code != 200 || !strings.Contains(body, "heapd_clients 1") {
		t.Errorf("GET %s: %d\n%s", Path, code, body)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
}

// A socket left by a dead process is replaced; a live one, a file that is
// not a socket, and malformed addresses are refused.
func TestListenRefusals(t *testing.T) {
	dir := t.TempDir()

	stale := filepath.Join(dir, "stale")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	ln, err := Listen(UnixPrefix + stale)
	if err != nil {
		t.Errorf("stale socket not replaced: %v", err)
	} else {
		// The live one now refuses a second Listen.
		if ln2, err := Listen(UnixPrefix + stale); err == nil || !strings.Contains(err.Error(), "live server") {
			t.Errorf("live socket: %v", err)
			if ln2 != nil {
				ln2.Close()
			}
		}
		ln.Close()
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"", "9477", "localhost", UnixPrefix + "relative/path", UnixPrefix + file} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted", addr)
		}
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("Listen removed a regular file: %v", err)
	}
}

// Serve returns the error that stops the server (here: its listener
// closed under it).
func TestServeListenerError(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := newTest(t).Serve(context.Background(), ln); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}
