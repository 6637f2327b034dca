package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// helperEnv makes the test binary act as a client process (see TestMain):
// the value names what it does.
const helperEnv = "HEAPD_CLIENT_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	daemontest.Main(m)
}

// helperResult is what a helper process reports on stdout.
type helperResult struct {
	UID      uint32 `json:"uid"`
	Name     string `json:"name"`
	Heap     string `json:"heap"`
	Size     int64  `json:"size"`
	Emulated bool   `json:"emulated"`
	Kernel   bool   `json:"kernel"`
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
	Code     uint32 `json:"code,omitempty"`
}

// helper runs in a child process (possibly as another uid): it allocates
// through heapd on $HEAPD_SOCKET, verifies a pattern through a mapping and
// reports.
func helper(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c client.Client
	defer c.Close()
	res := helperResult{}
	heapName, size := "system", int64(1<<20)
	if h := os.Getenv("HEAPD_HELPER_HEAP"); h != "" {
		heapName = h
	}
	err := func() error {
		u, err := c.Usage(ctx)
		if err != nil {
			return err
		}
		res.UID = u.UID
		a, err := c.Allocate(ctx, client.Request{Heap: heapName, Size: size, Label: mode})
		if err != nil {
			return err
		}
		defer a.Close()
		b := a.Buffers[0]
		res.Name, res.Heap, res.Size, res.Emulated, res.Kernel = a.Name, a.Heap, b.Size(), b.Emulated(), b.Kind() == dmabuf.KindKernel
		res.Verified, err = fillCheck(b)
		return err
	}()
	if err != nil {
		res.Error = err.Error()
		var pe *protocol.Error
		if errors.As(err, &pe) {
			res.Code = uint32(pe.Code)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// fillCheck writes a counter pattern through a mapping and reads it back.
func fillCheck(b *dmabuf.Buffer) (bool, error) {
	m, err := b.Map(dmabuf.ProtReadWrite)
	if err != nil {
		return false, err
	}
	defer m.Close()
	p := m.Bytes()
	if err := b.CPUAccess(dmabuf.Write, func() error {
		for i := range p {
			p[i] = byte(i * 7)
		}
		return nil
	}); err != nil {
		return false, err
	}
	ok := true
	err = b.CPUAccess(dmabuf.Read, func() error {
		for i := range p {
			if p[i] != byte(i*7) {
				ok = false
				return nil
			}
		}
		return nil
	})
	return ok, err
}

// runHelper runs this test binary as a helper, as uid/gid when asRoot is
// false. The binary is copied where every uid can execute it.
func runHelper(t *testing.T, d *daemontest.Daemon, mode string, uid, gid uint32, env ...string) helperResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := daemontest.TempDir(t)
	bin := filepath.Join(dir, "client.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, client.EnvSocket+"="+d.Socket)
	cmd.Env = append(cmd.Env, env...)
	if uid != uint32(os.Getuid()) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	var res helperResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("helper output: %v\n%s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	return res
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, d *daemontest.Daemon) *client.Client {
	c := &client.Client{Socket: d.Socket}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestE2EAllocate(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	ctx := ctxT(t)
	c := &client.Client{Socket: d.Socket}

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Major != 1 || !strings.HasPrefix(info.Version, "heapd") || info.Features&protocol.FeatureBatch == 0 {
		t.Errorf("info %+v", info)
	}
	heaps, _, err := c.Heaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range heaps {
		names = append(names, h.Name)
	}
	if !strings.Contains(","+strings.Join(names, ",")+",", ",system,") {
		t.Fatalf("no system heap in %v", names)
	}

	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 1 << 20, Label: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	b := a.Buffers[0]
	if b.Size() != 1<<20 || a.Size != 1<<20 || a.Heap != "system" {
		t.Errorf("allocation %+v size %d", a, b.Size())
	}
	if want := "heapd:uid0:client.test:e2e"; os.Getuid() == 0 && a.Name != want {
		t.Errorf("name %q, want %q", a.Name, want)
	}
	st, err := b.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != a.Name {
		t.Errorf("buffer's own name %q, reply says %q", st.Name, a.Name)
	}
	if ok, err := fillCheck(b); !ok || err != nil {
		t.Errorf("pattern: %v %v", ok, err)
	}
	if a.Emulated() != b.Emulated() {
		t.Errorf("emulated flag %v, buffer says %v", a.Emulated(), b.Emulated())
	}
	a.Close()

	// An image: XRGB8888 640x480 → pitch 2560, 1228800 bytes.
	img, err := c.Allocate(ctx, client.Request{Heap: "system", Image: &protocol.Image{Width: 641, Height: 480, Format: 0x34325258, Modifier: protocol.ModifierInvalid}})
	if err != nil {
		t.Fatal(err)
	}
	wantLayout := protocol.Layout{Width: 641, Height: 480, Format: 0x34325258, Pitch: 2624, Modifier: protocol.ModifierLinear}
	if img.Layout != wantLayout || img.Size < 2624*480 {
		t.Errorf("image layout %+v size %d, want %+v", img.Layout, img.Size, wantLayout)
	}
	img.Close()

	// A batch of 4, one reply.
	batch, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 4096, Count: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch.Buffers) != 4 || len(batch.IDs) != 4 {
		t.Errorf("batch: %d buffers, ids %v", len(batch.Buffers), batch.IDs)
	}
	batch.Close()

	u, err := c.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != uint32(os.Getuid()) || u.PID != int32(os.Getpid()) || u.TotalBuffers != 6 || u.Comm != "client.test" {
		t.Errorf("usage %+v", u)
	}
	c.Close()
	d.WaitFDs(t, baseline)
}

func TestE2EErrors(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	ctx := ctxT(t)
	c := newClient(t, d)
	for _, tc := range []struct {
		name string
		req  client.Request
		code protocol.Code
	}{
		{"unknown heap", client.Request{Heap: "nope", Size: 4096}, protocol.CodeUnknownHeap},
		{"unknown device", client.Request{Devices: []string{"no-such-device"}, Size: 4096}, protocol.CodeUnknownDevice},
		{"format", client.Request{Heap: "system", Image: &protocol.Image{Width: 64, Height: 64, Format: 0x3231564e}}, protocol.CodeNotSupported},
		{"modifier", client.Request{Heap: "system", Image: &protocol.Image{Width: 64, Height: 64, Format: 0x34325258, Modifier: 1 << 56}}, protocol.CodeNotSupported},
		{"zero image", client.Request{Heap: "system", Image: &protocol.Image{Format: 0x34325258}}, protocol.CodeInvalidArgument},
	} {
		_, err := c.Allocate(ctx, tc.req)
		if !errors.Is(err, tc.code) {
			t.Errorf("%s: got %v, want code %s", tc.name, err, tc.code)
		}
	}
	// The connection survives refusals.
	if _, _, err := c.Heaps(ctx); err != nil {
		t.Fatal(err)
	}
	// A cancelled call returns at once; its reply's fds are closed.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Alloc(cctx, "system", 4096); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	c.Close()
	d.WaitFDs(t, baseline)
}

func TestE2ENoDaemon(t *testing.T) {
	testutil.CheckFDs(t)
	c := &client.Client{Socket: filepath.Join(t.TempDir(), "none")}
	defer c.Close()
	if _, err := c.Alloc(ctxT(t), "system", 4096); !errors.Is(err, client.ErrNoDaemon) {
		t.Errorf("got %v, want ErrNoDaemon", err)
	}
}

func TestE2EEnvSocket(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	t.Setenv(client.EnvSocket, d.Socket)
	var c client.Client
	defer c.Close()
	if c.SocketPath() != d.Socket {
		t.Fatalf("SocketPath %q", c.SocketPath())
	}
	b, err := c.Alloc(ctxT(t), "system", 4096)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}

// The client reconnects after the daemon restarts, also after a crash
// that leaves the socket file behind.
func TestE2EReconnect(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	ctx := ctxT(t)
	c := newClient(t, d)
	b, err := c.Alloc(ctx, "system", 4096)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	d.Stop()
	if _, err := c.Alloc(ctx, "system", 4096); !errors.Is(err, client.ErrNoDaemon) {
		t.Errorf("daemon stopped: got %v, want ErrNoDaemon", err)
	}
	d2 := daemontest.Start(t, &daemontest.Options{Socket: d.Socket})
	b, err = c.Alloc(ctx, "system", 4096)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	b.Close()
	d2.Kill() // a crash: the socket file stays
	d3 := daemontest.Start(t, &daemontest.Options{Socket: d.Socket})
	b, err = c.Alloc(ctx, "system", 4096)
	if err != nil {
		t.Fatalf("after crash and restart: %v\n%s", err, d3.Log())
	}
	b.Close()
	if !strings.Contains(d3.Log(), "stale socket") {
		t.Errorf("the new daemon did not report replacing the stale socket:\n%s", d3.Log())
	}
}

// A process of another uid (nobody) allocates through the daemon: the
// daemon identifies it from the socket and names the buffer after it.
func TestE2EOtherUID(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	res := runHelper(t, d, "nobody", 65534, 65534)
	if res.Error != "" {
		t.Fatalf("helper: %s", res.Error)
	}
	if res.UID != 65534 || !res.Verified || res.Size != 1<<20 || !strings.HasPrefix(res.Name, "heapd:uid65534:client.test") {
		t.Errorf("helper result %+v", res)
	}
	d.WaitFDs(t, baseline)
}

// Many clients at once: each gets its buffers; nothing leaks.
func TestE2EConcurrent(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	baseline := d.Baseline()
	ctx := ctxT(t)
	shared := newClient(t, d)
	errc := make(chan error, 16)
	for i := range 16 {
		go func() {
			c := shared
			if i%2 == 0 {
				c = &client.Client{Socket: d.Socket}
				defer c.Close()
			}
			for range 10 {
				b, err := c.Alloc(ctx, "system", 64<<10)
				if err != nil {
					errc <- err
					return
				}
				b.Close()
			}
			errc <- nil
		}()
	}
	for range 16 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	shared.Close()
	d.WaitFDs(t, baseline)
}

func TestE2EWatch(t *testing.T) {
	testutil.CheckFDs(t)
	d := daemontest.Start(t, nil)
	c := newClient(t, d)
	ctx, cancel := context.WithCancel(ctxT(t))
	err := c.Watch(ctx, protocol.EventsHeaps, func() {
		// Subscribed: a rescan that changes nothing sends nothing; then stop.
		d.Signal(syscall.SIGHUP)
		time.AfterFunc(200*time.Millisecond, cancel)
	}, func(ev protocol.Event) error {
		t.Errorf("unexpected event %+v", ev)
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch: %v", err)
	}
	if !strings.Contains(d.Log(), "SIGHUP") {
		t.Errorf("no SIGHUP in log:\n%s", d.Log())
	}
}
