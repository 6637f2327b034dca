package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

// The renderer child of `heapctl demo scanout` re-executes its own
// executable; under `go test` that is this test binary, which becomes the
// child here, before TestMain.
func init() {
	if os.Getenv(demoChildEnv) != "1" {
		return
	}
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "heapctl: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestIntegrationDemoScanout runs `heapctl demo scanout` in-process: an
// unprivileged renderer (uid 65534) gets a {vkms, vgem} buffer from heapd,
// writes a pattern, hands it over; this process shows it on vkms,
// captures it and compares. It fails if the pixels differ, if the
// renderer opened vkms's primary node, or if fds leak here or in heapd.
func TestIntegrationDemoScanout(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedPath(t, "/sys/module/vgem", "vgem not loaded (CONFIG_DRM_VGEM)?")
	testutil.NeedRoot(t)
	d := daemontest.Start(t, &daemontest.Options{Policy: "[ledger]\nrelease_interval = \"100ms\"\n" + demoPolicy})
	base := d.Baseline()
	t.Setenv(client.EnvSocket, d.Socket)
	testutil.CheckFDs(t)
	fbsBefore, bufsBefore := kernelObjects(t)
	defer func() {
		// Framebuffers are removed synchronously; DMA-BUFs once heapd's
		// ledger sees the last holder gone (release_interval 100ms).
		deadline := time.Now().Add(3 * time.Second)
		for {
			fbs, bufs := kernelObjects(t)
			if fbs == fbsBefore && bufs == bufsBefore {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("kernel objects leaked: %d framebuffers (before %d), %d DMA-BUFs (before %d)", fbs, fbsBefore, bufs, bufsBefore)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	png := filepath.Join(t.TempDir(), "capture.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"demo", "scanout", "--frames", "60", "--png", png, "-o", "json"}, &out, &errb)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	if err != nil {
		t.Fatalf("demo scanout: %v", err)
	}
	var r demoResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	c := r.Renderer
	if c.UID != demoUID {
		t.Errorf("renderer ran as uid %d, want %d", c.UID, demoUID)
	}
	if c.OpenedPrimary || c.PrimaryOpenError == "" {
		t.Errorf("renderer opened the primary node %s (open error %q)", c.PrimaryNode, c.PrimaryOpenError)
	}
	// The compositor's own check, from outside the renderer.
	pc := r.PrimaryCheck
	if err := pc.verdict(); err != nil || pc.Node != c.PrimaryNode || pc.ModeAllows || pc.ProbeOpened ||
		!strings.Contains(pc.ProbeError, "permission denied") || pc.Samples == 0 || pc.SeenOpen ||
		pc.ProbeCredentials != demoCredentials() || pc.RendererCredentials != demoCredentials() {
		t.Errorf("primary check: %v: %+v", err, pc)
	}
	t.Logf("primary check: %s", pc.summary())
	if c.Handle == 0 || (c.WriteVia != "vgem" && c.WriteVia != "dma-buf") {
		t.Errorf("renderer did not import into vgem and write: %+v", c)
	}
	if !r.Capture.Exact || r.Capture.Mismatched != 0 || r.Capture.Pixels != int(r.Layout.Width*r.Layout.Height) || r.Capture.Pixels == 0 {
		t.Errorf("capture: %+v", r.Capture)
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Errorf("png: %v", err)
	}
	if r.Flip == nil || r.Flip.Frames != 60 || r.Flip.FlipsPS <= 0 {
		t.Errorf("flip: %+v", r.Flip)
	}
	if !r.OldWay.Imported {
		t.Errorf("old way: %+v", r.OldWay)
	}
	var tbl bytes.Buffer
	g := &globals{stdout: &tbl}
	if err := g.emit(&r, r.table); err != nil {
		t.Error(err)
	}
	t.Logf("table:\n%s", tbl.String())
	d.WaitFDs(t, base)
}

// Without $HEAPD_SOCKET the command starts a heapd from PATH for the run
// (the VM tier puts cmd/heapd there), and stops it.
func TestIntegrationDemoScanoutOwnHeapd(t *testing.T) {
	testutil.NeedPath(t, "/sys/module/vkms", "vkms not loaded (CONFIG_DRM_VKMS)?")
	testutil.NeedPath(t, "/sys/module/vgem", "vgem not loaded (CONFIG_DRM_VGEM)?")
	testutil.NeedRoot(t)
	if _, err := exec.LookPath("heapd"); err != nil {
		testutil.Missing(t, "no heapd on PATH")
	}
	t.Setenv(client.EnvSocket, "")
	testutil.CheckFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"demo", "scanout", "--frames", "0"}, &out, &errb)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	if err != nil {
		t.Fatalf("demo scanout: %v", err)
	}
	if !strings.Contains(out.String(), "exact match (ok)") || !strings.Contains(out.String(), "ever opened: false (ok)") ||
		!strings.Contains(out.String(), "never held it (ok)") {
		t.Errorf("table does not show an exact match by a renderer that never opened the primary node")
	}
}

// kernelObjects counts every DRM framebuffer (debugfs dri/*/framebuffer)
// and every DMA-BUF on the system (debugfs dma_buf/bufinfo), so a test can
// prove it left none behind: a leaked GEM handle or import keeps its
// DMA-BUF alive.
func kernelObjects(t *testing.T) (fbs, bufs int) {
	t.Helper()
	paths, _ := filepath.Glob("/sys/kernel/debug/dri/*/framebuffer")
	if len(paths) == 0 {
		testutil.Missing(t, "no /sys/kernel/debug/dri/*/framebuffer: debugfs not mounted?")
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fbs += strings.Count(string(data), "framebuffer[")
	}
	data, err := os.ReadFile("/sys/kernel/debug/dma_buf/bufinfo")
	if err != nil {
		testutil.Missing(t, "debugfs dma_buf/bufinfo unreadable: "+err.Error())
	}
	for _, l := range strings.Split(string(data), "\n") {
		if n, ok := strings.CutPrefix(l, "Total "); ok {
			fmt.Sscanf(n, "%d", &bufs)
		}
	}
	return fbs, bufs
}
