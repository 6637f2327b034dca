package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/compositor"
	"github.com/heapd/heapd/internal/uapi"
	"github.com/heapd/heapd/protocol"
)

// demoUID is the unprivileged uid the renderer child runs as ("nobody").
const demoUID = 65534

// demoChildEnv marks a re-executed heapctl (or test binary) as the
// renderer child of `heapctl demo scanout`.
const demoChildEnv = "HEAPCTL_DEMO_CHILD"

// demoFormatXR24 is DRM_FORMAT_XRGB8888.
const demoFormatXR24 = 0x34325258

// demoPolicy is the policy `heapctl demo scanout` gives the heapd it
// starts itself: root and the demo's unprivileged uid may use every heap.
const demoPolicy = `# heapctl demo scanout
[[rule]]
name = "root"
uid = [0]
heaps = ["*"]

[[rule]]
name = "demo-renderer"
uid = [65534]
heaps = ["*"]

[[rule]]
name = "everyone"
heaps = ["system"]
`

// demoChild is what the unprivileged renderer reports to the compositor,
// sent with the buffer's fd over the socketpair.
type demoChild struct {
	UID     int             `json:"uid"`
	Heap    string          `json:"heap"`
	Backend string          `json:"backend"`
	Layout  protocol.Layout `json:"layout"`
	Seed    uint32          `json:"seed"`
	// RenderNode is the vgem render node the buffer was imported into,
	// Handle the GEM handle it got there.
	RenderNode string `json:"render_node"`
	// RenderFrom says how the renderer got the render node.
	RenderFrom string `json:"render_from"`
	Handle     uint32 `json:"handle"`
	// WriteVia says how the pattern was written: "vgem" (vgem's own
	// mapping of the imported object) or "dma-buf" (the DMA-BUF's mmap,
	// when vgem cannot map it for this process); VGEMMapError says why.
	WriteVia     string `json:"write_via"`
	VGEMMapError string `json:"vgem_map_error,omitempty"`
	// PrimaryNode is the display's primary node, PrimaryOpenError what
	// opening it read-write gave (EACCES expected), OpenedPrimary whether
	// the child ever held it open.
	PrimaryNode      string `json:"primary_node"`
	PrimaryOpenError string `json:"primary_open_error"`
	OpenedPrimary    bool   `json:"opened_primary"`
	Error            string `json:"error,omitempty"`
}

// demoResult is the output of `heapctl demo scanout`.
type demoResult struct {
	Kernel   string    `json:"kernel"`
	Socket   string    `json:"socket"`
	Renderer demoChild `json:"renderer"`
	// PrimaryCheck is the compositor's proof, from outside the renderer,
	// that the renderer never had the display's primary node.
	PrimaryCheck demoPrimaryCheck `json:"primary_check"`
	Screen       string           `json:"screen"`
	Capture      demoCapture      `json:"capture"`
	PNG          string           `json:"png,omitempty"`
	Flip         *demoFlip        `json:"flip,omitempty"`
	OldWay       demoOldWay       `json:"old_way"`
	Layout       protocol.Layout  `json:"layout"`
}

type demoCapture struct {
	Pixels     int    `json:"pixels"`
	Mismatched int    `json:"mismatched"`
	XDiffers   int    `json:"x_differs"`
	Exact      bool   `json:"exact"`
	Result     string `json:"result"`
	Heap       string `json:"heap"`
}

type demoFlip struct {
	Frames   int     `json:"frames"`
	Seconds  float64 `json:"seconds"`
	FlipsPS  float64 `json:"flips_per_second"`
	RefreshH float64 `json:"refresh_hz"`
	Summary  string  `json:"summary"`
}

// demoOldWay is the contrast: a dumb buffer on the display's primary node
// exported and imported into vgem (what Mesa's kmsro does).
type demoOldWay struct {
	PrimaryNode string  `json:"primary_node"`
	Imported    bool    `json:"imported"`
	Micros      float64 `json:"microseconds"`
	Error       string  `json:"error,omitempty"`
	Note        string  `json:"note"`
}

func demoCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "demo",
		Short: "End-to-end demonstrations on real devices",
		Example: `  heapctl demo scanout                    # as root, with vkms and vgem loaded
  heapctl demo scanout --png frame.png --frames 0`,
	}
	var width, height, frames int
	var png, primary, render string
	sc := &cobra.Command{
		Use:   "scanout",
		Short: "Unprivileged renderer → heapd scanout buffer → vgem → vkms, captured and compared",
		Long: `demo scanout (as root, with vkms and vgem loaded) forks a renderer running
as uid 65534 which allocates a buffer for {vkms, vgem} from heapd by image
description, imports it into vgem's render node, writes a test pattern and
passes the fd back. This process, as DRM master on vkms, shows it, captures
it through the writeback connector into a second heapd buffer, compares the
pixels, and flips a 3-buffer swapchain. It also measures the old way: a dumb
buffer on vkms's primary node imported into vgem.

heapd is reached through $HEAPD_SOCKET; when unset, a heapd from PATH is
started for the run.`,
		Example: `  heapctl demo scanout
  heapctl demo scanout --png scanout.png   # keep the captured frame
  heapctl demo scanout --frames 0 -o json  # no swapchain flips; a report for scripts
  HEAPD_SOCKET=/run/heapd/socket heapctl demo scanout   # through a running heapd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pngOut := io.Writer(nil)
			if png == "-" {
				// The PNG goes to stdout (so `make vmrun` can carry it
				// out of the VM as a build artifact); the report to stderr.
				pngOut, g.stdout = g.stdout, g.stderr
			}
			r, err := demoScanout(cmd.Context(), g, width, height, frames, png, pngOut)
			if err != nil {
				return err
			}
			return g.emit(r, func(w io.Writer) error { return r.table(w) })
		},
	}
	sc.Flags().IntVar(&width, "width", 1024, "image width")
	sc.Flags().IntVar(&height, "height", 768, "image height (vkms offers 1024x768)")
	sc.Flags().IntVar(&frames, "frames", 120, "frames to flip over a 3-buffer swapchain (0: no flips)")
	sc.Flags().StringVar(&png, "png", "", "write the captured frame to this PNG file (- for stdout: the report then goes to stderr)")
	child := &cobra.Command{
		Use:    "scanout-child",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demoRenderer(cmd.Context(), width, height, primary, render)
		},
	}
	probe := &cobra.Command{
		Use:    "scanout-probe",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return json.NewEncoder(g.stdout).Encode(demoProbe(primary))
		},
	}
	probe.Flags().StringVar(&primary, "primary", "", "")
	c.AddCommand(probe)
	child.Flags().StringVar(&primary, "primary", "", "")
	child.Flags().StringVar(&render, "render", "", "")
	child.Flags().IntVar(&width, "width", 1024, "")
	child.Flags().IntVar(&height, "height", 768, "")
	c.AddCommand(sc, child)
	return c
}

func (r *demoResult) table(w io.Writer) error {
	ok := func(b bool) string {
		if b {
			return "ok"
		}
		return "FAILED"
	}
	c := r.Renderer
	fmt.Fprintf(w, "kernel:    %s\n", r.Kernel)
	fmt.Fprintf(w, "heapd:     %s\n", r.Socket)
	fmt.Fprintf(w, "renderer:  uid %d, heap %s (%s), layout %dx%d pitch %d\n", c.UID, c.Heap, c.Backend, c.Layout.Width, c.Layout.Height, c.Layout.Pitch)
	fmt.Fprintf(w, "           imported into %s (%s) as handle %d, pattern written via %s\n", c.RenderNode, c.RenderFrom, c.Handle, c.WriteVia)
	if c.VGEMMapError != "" {
		fmt.Fprintf(w, "           vgem map of the import: %s\n", c.VGEMMapError)
	}
	fmt.Fprintf(w, "           open %s: %s; ever opened: %v (%s)\n", c.PrimaryNode, c.PrimaryOpenError, c.OpenedPrimary, ok(!c.OpenedPrimary))
	fmt.Fprintf(w, "outside:   %s (%s)\n", r.PrimaryCheck.summary(), ok(r.PrimaryCheck.verdict() == nil))
	fmt.Fprintf(w, "screen:    %s\n", r.Screen)
	fmt.Fprintf(w, "capture:   %s (%s)\n", r.Capture.Result, ok(r.Capture.Exact))
	if r.PNG != "" {
		fmt.Fprintf(w, "png:       %s\n", r.PNG)
	}
	if r.Flip != nil {
		fmt.Fprintf(w, "flip:      %s\n", r.Flip.Summary)
	}
	o := r.OldWay
	if o.Error != "" {
		fmt.Fprintf(w, "old way:   dumb buffer on %s: %s\n", o.PrimaryNode, o.Error)
	} else {
		fmt.Fprintf(w, "old way:   dumb buffer on %s imported into vgem in %.0fµs\n", o.PrimaryNode, o.Micros)
	}
	_, err := fmt.Fprintf(w, "           %s\n", o.Note)
	return err
}

// demoDevices finds vkms and vgem.
func demoDevices() (vkms, vgem *drm.DeviceInfo, err error) {
	devs, err := drm.Discover(nil)
	if err != nil {
		return nil, nil, err
	}
	for i := range devs {
		switch devs[i].Driver {
		case "vkms":
			if vkms == nil {
				vkms = &devs[i]
			}
		case "vgem":
			if vgem == nil {
				vgem = &devs[i]
			}
		}
	}
	if vkms == nil || vkms.Primary == nil || vgem == nil || vgem.Render == nil {
		return nil, nil, errors.New("demo scanout needs vkms (with a primary node) and vgem (with a render node): modprobe vkms vgem")
	}
	return vkms, vgem, nil
}

func demoImage(width, height int) *protocol.Image {
	return &protocol.Image{Width: uint32(width), Height: uint32(height), Format: demoFormatXR24, Modifier: 0}
}

func drmLayout(l protocol.Layout) drm.Layout {
	return drm.Layout{Width: l.Width, Height: l.Height, Format: drm.Format(l.Format),
		Pitch: l.Pitch, Offset: l.Offset, Modifier: drm.Modifier(l.Modifier)}
}

// demoStartHeapd starts heapd from PATH on a socket in a fresh directory
// every uid can enter, and returns the socket and a stop function.
func demoStartHeapd(ctx context.Context, stderr io.Writer) (string, func(), error) {
	bin, err := exec.LookPath("heapd")
	if err != nil {
		return "", nil, fmt.Errorf("HEAPD_SOCKET is unset and no heapd on PATH: %w", err)
	}
	dir, err := os.MkdirTemp("", "heapctl-demo-")
	if err != nil {
		return "", nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	cfg := filepath.Join(dir, "heapd.toml")
	if err := os.WriteFile(cfg, []byte(demoPolicy), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	sock := filepath.Join(dir, "socket")
	cmd := exec.Command(bin, "--socket", sock, "--config", cfg)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := &client.Client{Socket: sock}
		_, err := c.Info(ctx)
		c.Close()
		if err == nil {
			return sock, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("heapd did not come up on %s: %w", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func demoScanout(ctx context.Context, g *globals, width, height, frames int, pngPath string, pngOut io.Writer) (res *demoResult, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("demo scanout runs as root: it forks an unprivileged renderer and becomes DRM master on vkms")
	}
	vkms, vgem, err := demoDevices()
	if err != nil {
		return nil, err
	}
	res = &demoResult{}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		res.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	sock := os.Getenv(client.EnvSocket)
	if sock == "" {
		s, stop, err := demoStartHeapd(ctx, g.stderr)
		if err != nil {
			return nil, err
		}
		defer stop()
		sock = s
	}
	res.Socket = sock

	// Before the renderer runs: its credentials cannot open the
	// display's primary node (mode bits, and a real open as them).
	res.PrimaryCheck.Node = vkms.Primary.Path
	if err := checkPrimaryBefore(ctx, &res.PrimaryCheck); err != nil {
		return res, err
	}

	// The renderer: an unprivileged child that hands back a buffer,
	// watched from here while it runs.
	c, buf, err := demoRunRenderer(ctx, g, sock, width, height, vkms.Primary.Path, vgem.Render.Path, &res.PrimaryCheck)
	res.Renderer = c
	if err != nil {
		return res, err
	}
	defer buf.Close()
	if c.OpenedPrimary {
		return res, fmt.Errorf("the unprivileged renderer opened the display's primary node %s", c.PrimaryNode)
	}
	if err := res.PrimaryCheck.verdict(); err != nil {
		return res, err
	}
	l := drmLayout(c.Layout)
	res.Layout = c.Layout

	// The compositor: DRM master on vkms.
	dev, err := compositor.OpenDisplay("vkms")
	if err != nil {
		return res, err
	}
	defer dev.Close()
	scr, err := compositor.Show(dev, buf, l)
	if err != nil {
		return res, err
	}
	defer scr.Close()
	res.Screen = scr.String()

	cl := &client.Client{Socket: sock}
	defer cl.Close()
	capA, err := cl.Allocate(ctx, client.Request{Devices: []string{"vkms"}, Image: demoImage(width, height), Label: "demo-capture"})
	if err != nil {
		return res, fmt.Errorf("capture buffer: %w", err)
	}
	defer capA.Close()
	capL := drmLayout(capA.Layout)
	res.Capture.Heap = capA.Heap
	if _, err := scr.Capture(ctx, capA.Buffers[0], capL); err != nil {
		return res, err
	}
	want := make([]byte, int(l.Offset)+int(l.Height)*int(l.Pitch))
	compositor.FillPatternBytes(want, l, c.Seed)
	got, err := compositor.ReadPixels(capA.Buffers[0], capL)
	if err != nil {
		return res, err
	}
	cmp, err := compositor.Compare(want, l, got, capL)
	if err != nil {
		return res, err
	}
	res.Capture.Pixels, res.Capture.Mismatched, res.Capture.XDiffers = cmp.Pixels, cmp.Mismatched, cmp.XDiffers
	res.Capture.Exact, res.Capture.Result = cmp.Exact(), cmp.String()
	switch {
	case pngOut != nil:
		if err := compositor.WritePNG(pngOut, capA.Buffers[0], capL); err != nil {
			return res, err
		}
		res.PNG = "(stdout)"
	case pngPath != "":
		f, err := os.Create(pngPath)
		if err != nil {
			return res, err
		}
		err = errors.Join(compositor.WritePNG(f, capA.Buffers[0], capL), f.Close())
		if err != nil {
			return res, err
		}
		res.PNG = pngPath
	}

	if frames > 0 {
		sw, err := cl.Allocate(ctx, client.Request{Devices: []string{"vkms", "vgem"}, Image: demoImage(width, height), Count: 3, Label: "demo-swapchain"})
		if err != nil {
			return res, fmt.Errorf("swapchain: %w", err)
		}
		defer sw.Close()
		swL := drmLayout(sw.Layout)
		for i, b := range sw.Buffers {
			if err := compositor.FillPattern(b, swL, uint32(i+1)<<16); err != nil {
				return res, err
			}
		}
		st, err := scr.Flip(ctx, sw.Buffers, swL, frames)
		if err != nil {
			return res, err
		}
		res.Flip = &demoFlip{Frames: st.Frames, Seconds: st.Elapsed.Seconds(), FlipsPS: st.FlipsPerSecond, RefreshH: st.RefreshHz, Summary: st.String()}
	}

	res.OldWay = demoOldWayRun(dev, vkms, vgem, int64(l.Offset)+int64(l.Height)*int64(l.Pitch))
	if !cmp.Exact() {
		return res, fmt.Errorf("captured frame differs from the renderer's pattern: %s", cmp)
	}
	return res, nil
}

// demoOldWayRun allocates a dumb buffer on the display's primary node (the
// compositor's own master fd), exports it and imports it into vgem.
func demoOldWayRun(dev *drm.Device, vkms, vgem *drm.DeviceInfo, size int64) demoOldWay {
	o := demoOldWay{PrimaryNode: vkms.Primary.Path,
		Note: "needs an open primary node of the display (root or the seat's DRM master); the unprivileged renderer was denied it"}
	start := time.Now()
	buf, err := drm.AllocateDumb(dev, size)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	defer buf.Close()
	rd, err := vgem.Open(drm.NodeRender)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	defer rd.Close()
	h, err := rd.Import(buf)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Micros = float64(time.Since(start).Microseconds())
	o.Imported = true
	_ = h.Close()
	return o
}

// demoRunRenderer forks the renderer as uid 65534 and receives its report
// and buffer. While it runs, its fds and mappings are sampled into check.
func demoRunRenderer(ctx context.Context, g *globals, sock string, width, height int, primary, render string, check *demoPrimaryCheck) (demoChild, *dmabuf.Buffer, error) {
	var rep demoChild
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return rep, nil, os.NewSyscallError("socketpair", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "demo-parent")
	childEnd := os.NewFile(uintptr(fds[1]), "demo-child")
	defer parent.Close()
	// Re-exec this executable through an fd, so the unprivileged child
	// needs no search permission on the directories it lives in (a test
	// binary's private build directory).
	exe, err := os.Executable()
	if err != nil {
		childEnd.Close()
		return rep, nil, err
	}
	ef, err := os.Open(exe)
	if err != nil {
		childEnd.Close()
		return rep, nil, err
	}
	defer ef.Close()
	cmd := exec.CommandContext(ctx, fmt.Sprintf("/proc/self/fd/%d", ef.Fd()), "demo", "scanout-child",
		"--width", fmt.Sprint(width), "--height", fmt.Sprint(height), "--primary", primary, "--render", render)
	cmd.Args[0] = "heapctl"
	cmd.Env = append(os.Environ(), client.EnvSocket+"="+sock, demoChildEnv+"=1")
	rf, err := os.OpenFile(render, os.O_RDWR, 0)
	if err != nil {
		childEnd.Close()
		return rep, nil, err
	}
	defer rf.Close()
	cmd.ExtraFiles = []*os.File{childEnd, rf}
	cmd.Stdout, cmd.Stderr = g.stderr, g.stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = demoSysProcAttr()
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		return rep, nil, fmt.Errorf("start renderer: %w", err)
	}
	watch, werr := watchPrimary(cmd.Process.Pid, check)
	if werr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return rep, nil, werr
	}
	msg := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, rerr := recvmsgFile(parent, msg, oob)
	// Sampled until the renderer exits, then not: its pid may be reused.
	werr = waitWatched(cmd, watch)
	var fd = -1
	if rerr == nil && oobn > 0 {
		if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, s := range scms {
				if got, err := unix.ParseUnixRights(&s); err == nil {
					for _, f := range got {
						if fd < 0 {
							fd = f
						} else {
							unix.Close(f)
						}
					}
				}
			}
		}
	}
	if rerr == nil && n > 0 {
		rerr = json.Unmarshal(msg[:n], &rep)
	}
	if err := errors.Join(rerr, werr); err != nil || rep.Error != "" || fd < 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		if rep.Error != "" {
			return rep, nil, fmt.Errorf("renderer: %s", rep.Error)
		}
		if err == nil {
			err = errors.New("no buffer received")
		}
		return rep, nil, fmt.Errorf("renderer: %w", err)
	}
	buf, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		return rep, nil, err
	}
	return rep, buf, nil
}

func recvmsgFile(f *os.File, msg, oob []byte) (n, oobn int, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), msg, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	return n, oobn, err
}

// demoRenderer is the unprivileged child: fd 3 is its end of the
// socketpair. Whatever happens it sends a report; the buffer travels with
// it on success.
func demoRenderer(ctx context.Context, width, height int, primary, render string) error {
	sp := os.NewFile(3, "demo-socketpair")
	defer sp.Close()
	rep := demoChild{UID: os.Getuid(), Seed: 0x00123456}
	var send *dmabuf.Buffer
	rep.PrimaryNode, rep.RenderNode = primary, render
	err := renderInto(ctx, &rep, width, height, &send)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.OpenedPrimary = rep.OpenedPrimary || holdsPath(rep.PrimaryNode)
	b, _ := json.Marshal(rep)
	var oob []byte
	if send != nil && rep.Error == "" {
		oob = unix.UnixRights(send.FD())
	}
	rc, serr := sp.SyscallConn()
	if serr == nil {
		cerr := rc.Write(func(fd uintptr) bool {
			serr = unix.Sendmsg(int(fd), b, oob, nil, 0)
			return serr != unix.EAGAIN
		})
		serr = errors.Join(serr, cerr)
	}
	if send != nil {
		send.Close()
	}
	return errors.Join(err, serr)
}

// holdsPath reports whether this process has path open.
func holdsPath(path string) bool {
	if path == "" {
		return false
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && t == path {
			return true
		}
	}
	return false
}

func renderInto(ctx context.Context, rep *demoChild, width, height int, out **dmabuf.Buffer) error {
	if rep.PrimaryNode == "" || rep.RenderNode == "" {
		return errors.New("the renderer needs --primary and --render")
	}
	// The display's primary node must be out of reach.
	if fd, err := unix.Open(rep.PrimaryNode, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		rep.PrimaryOpenError = err.Error()
	} else {
		rep.OpenedPrimary = true
		rep.PrimaryOpenError = "none: opened"
		unix.Close(fd)
	}

	cl := &client.Client{}
	defer cl.Close()
	a, err := cl.Allocate(ctx, client.Request{Devices: []string{"vkms", "vgem"}, Image: demoImage(width, height), Label: "demo-renderer"})
	if err != nil {
		return fmt.Errorf("allocate for {vkms, vgem}: %w", err)
	}
	buf := a.Buffers[0]
	ok := false
	defer func() {
		if !ok {
			buf.Close()
		}
	}()
	rep.Heap, rep.Backend, rep.Layout = a.Heap, a.Backend, a.Layout
	l := drmLayout(a.Layout)

	// The render node: this process's own open where the node's mode
	// allows it (udev gives renderD* to everyone or the render group), else
	// the fd the compositor passed as fd 4 (the VM's devtmpfs makes render
	// nodes root-only and has no udev).
	rfd, err := unix.Open(rep.RenderNode, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		rep.RenderFrom = "own open"
	} else {
		rep.RenderFrom = fmt.Sprintf("fd passed by the compositor (own open: %v)", err)
		if rfd, err = unix.Dup(4); err != nil {
			return fmt.Errorf("no render node: %w", err)
		}
		unix.CloseOnExec(rfd)
	}
	defer unix.Close(rfd)
	h, err := primeFDToHandle(rfd, buf.FD())
	if err != nil {
		return fmt.Errorf("import into %s: %w", rep.RenderNode, err)
	}
	defer gemClose(rfd, h)
	rep.Handle = h

	// vgem's own mapping of the imported object: MAP_DUMB and mmap on the
	// render node, the node this process has.
	pix, unmap, merr := vgemMap(rfd, rep.RenderNode, h, int(buf.Size()))
	if merr == nil {
		defer unmap()
		rep.WriteVia = "vgem"
	} else {
		rep.VGEMMapError = merr.Error()
		m, err := buf.Map(dmabuf.ProtReadWrite)
		if err != nil {
			return err
		}
		defer m.Close()
		pix = m.Bytes()
		rep.WriteVia = "dma-buf"
	}
	if err := buf.CPUAccess(dmabuf.Write, func() error {
		compositor.FillPatternBytes(pix, l, rep.Seed)
		return nil
	}); err != nil {
		return err
	}
	ok = true
	*out = buf
	return nil
}

// vgemMap maps the object imported as handle h on the render node fd
// through vgem: MAP_DUMB for its offset, then mmap of the node's fd.
func vgemMap(fd int, node string, h uint32, size int) ([]byte, func(), error) {
	off, err := mapDumbOffset(fd, h)
	if err != nil {
		return nil, nil, fmt.Errorf("DRM_IOCTL_MODE_MAP_DUMB on %s: %w", node, err)
	}
	data, err := unix.Mmap(fd, int64(off), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap of %s at %#x: %w", node, off, err)
	}
	return data, func() { _ = unix.Munmap(data) }, nil
}

func primeFDToHandle(fd, bufFD int) (uint32, error) { return uapi.DRMPrimeFDToHandleCall(fd, bufFD) }

func gemClose(fd int, h uint32) { _ = uapi.DRMGemCloseCall(fd, h) }

func mapDumbOffset(fd int, h uint32) (uint64, error) { return uapi.DRMModeMapDumbCall(fd, h) }
