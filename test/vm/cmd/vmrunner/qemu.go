package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

// arch describes how to build for and boot one guest configuration: a
// kernel architecture (build-kernel.sh's HEAPD_VM_ARCH) and the Go
// architecture of everything in the initramfs. arm-on-arm64 is armhf
// binaries on the arm64 kernel (CONFIG_COMPAT): Raspberry Pi OS 32-bit on a
// Pi 4 or 5.
type arch struct {
	name       string // the -arch name (make vmtest ARCH=…)
	kernelArch string // HEAPD_VM_ARCH of build-kernel.sh
	goarch     string
	goarm      string // GOARM for goarch arm
	cc         string // C cross compiler for the vm-static programs ("" = host cc)
	qemu       string // QEMU system emulator
	qemuPkg    string // the Debian package that provides it
	image      string // kernel image file in the artifact directory
	console    string // kernel console device
	// stdoutTTY is the guest device a run-mode command's stdout goes to,
	// and stdoutArgs the QEMU arguments that connect it to the chardev
	// "out".
	stdoutTTY  string
	stdoutArgs []string
	machine    []string
	// QEMU's exit status when /init reports pass and fail.
	passStatus, failStatus int
}

// Arm guests hand their status over by Arm semihosting (test/vm/cmd/vminit:
// QEMU exits with code<<1|1, like isa-debug-exit) and, having one UART,
// carry a run-mode command's stdout over a virtio console.
var (
	armSemihosting = []string{"-semihosting-config", "enable=on,userspace=on,target=native"}
	armStdout      = []string{"-device", "virtio-serial-device", "-device", "virtconsole,chardev=out"}
)

var arches = map[string]*arch{
	"amd64": {
		name:       "amd64",
		kernelArch: "x86_64",
		goarch:     "amd64",
		qemu:       "qemu-system-x86_64",
		qemuPkg:    "qemu-system-x86",
		image:      "bzImage",
		console:    "ttyS0",
		stdoutTTY:  "/dev/ttyS1",
		stdoutArgs: []string{"-serial", "chardev:out"},
		// KVM hangs on these machines; TCG is fast enough (boot ≈ 1 s).
		machine: []string{"-M", "pc", "-accel", "tcg", "-cpu", "qemu64",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"},
		// isa-debug-exit: QEMU exits with (byte<<1)|1; /init writes 0 or 1.
		passStatus: 1, failStatus: 3,
	},
	"arm64": {
		name:       "arm64",
		kernelArch: "arm64",
		goarch:     "arm64",
		cc:         "aarch64-linux-gnu-gcc",
		qemu:       "qemu-system-aarch64",
		qemuPkg:    "qemu-system-arm",
		image:      "Image",
		console:    "ttyAMA0",
		stdoutTTY:  "/dev/hvc0",
		stdoutArgs: armStdout,
		machine: append([]string{"-M", "virt", "-accel", "tcg", "-cpu", "cortex-a57"},
			armSemihosting...),
		passStatus: 1, failStatus: 3,
	},
	"arm": {
		name:       "arm",
		kernelArch: "arm",
		goarch:     "arm",
		goarm:      "7",
		cc:         "arm-linux-gnueabihf-gcc",
		qemu:       "qemu-system-arm",
		qemuPkg:    "qemu-system-arm",
		image:      "zImage",
		console:    "ttyAMA0",
		stdoutTTY:  "/dev/hvc0",
		stdoutArgs: armStdout,
		// highmem=off: a 32-bit guest without LPAE cannot reach virt's
		// high PCIe window.
		machine: append([]string{"-M", "virt,highmem=off", "-accel", "tcg", "-cpu", "cortex-a15"},
			armSemihosting...),
		passStatus: 1, failStatus: 3,
	},
	"arm-on-arm64": {
		name:       "arm-on-arm64",
		kernelArch: "arm64",
		goarch:     "arm",
		goarm:      "7",
		cc:         "arm-linux-gnueabihf-gcc",
		qemu:       "qemu-system-aarch64",
		qemuPkg:    "qemu-system-arm",
		image:      "Image",
		console:    "ttyAMA0",
		stdoutTTY:  "/dev/hvc0",
		stdoutArgs: armStdout,
		machine: append([]string{"-M", "virt", "-accel", "tcg", "-cpu", "cortex-a57"},
			armSemihosting...),
		passStatus: 1, failStatus: 3,
	},
}

// archAliases are other names -arch accepts.
var archAliases = map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armhf": "arm"}

// lookupArch finds an architecture by name or alias.
func lookupArch(name string) *arch {
	if a, ok := archAliases[name]; ok {
		name = a
	}
	return arches[name]
}

// archNames lists the -arch names, sorted.
func archNames() []string {
	names := make([]string, 0, len(arches))
	for n := range arches {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// defaultModules are loaded by /init at boot, vgem before vkms (card
// numbers follow load order, but tests must find devices by name).
var defaultModules = []vmproto.Module{
	{Name: "vgem", DRM: true},
	{Name: "vkms", Params: []string{"enable_writeback=1", "enable_cursor=1"}, DRM: true},
}

// kernel is one built kernel.
type kernel struct {
	label   string // "6.1"
	dir     string // artifact directory of build-kernel.sh
	release string // uname -r
}

func (k *kernel) load(a *arch) error {
	b, err := os.ReadFile(filepath.Join(k.dir, "kernelrelease"))
	if err != nil {
		return fmt.Errorf("kernel %s: %w", k.label, err)
	}
	k.release = strings.TrimSpace(string(b))
	if _, err := os.Stat(filepath.Join(k.dir, a.image)); err != nil {
		return fmt.Errorf("kernel %s: %w", k.label, err)
	}
	return nil
}

// bootOptions are the knobs of one boot.
type bootOptions struct {
	initrd  string
	memMB   int
	append  string
	timeout time.Duration
	// stdout receives a run-mode command's stdout (nil in test mode).
	stdout io.Writer
	// console is called for every console line, without line ending.
	console func(line string)
}

// vmResult is what one boot produced.
type vmResult struct {
	arch       *arch
	kernel     *kernel
	results    []vmproto.Result
	done       *vmproto.Done
	exit       *int   // run mode: the command's exit status
	running    string // test mode: the binary that started last
	errors     []string
	timedOut   bool
	qemuStatus int // -1 when killed
	elapsed    time.Duration
	err        error // QEMU could not run
}

func boot(ctx context.Context, a *arch, k *kernel, o bootOptions) *vmResult {
	res := &vmResult{arch: a, kernel: k, qemuStatus: -1}
	start := time.Now()
	defer func() { res.elapsed = time.Since(start) }()

	qemu, err := exec.LookPath(a.qemu)
	if err != nil {
		res.err = fmt.Errorf("%w (Debian package %s; test/vm/build-kernel.sh installs it)", err, a.qemuPkg)
		return res
	}
	conR, conW, err := os.Pipe()
	if err != nil {
		res.err = err
		return res
	}
	defer conR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		conW.Close()
		res.err = err
		return res
	}
	defer outR.Close()

	cmdline := fmt.Sprintf("console=%s cma=64M panic=-1 quiet %s=%s", a.console, vmproto.EnvKernel, k.label)
	if o.append != "" {
		cmdline += " " + o.append
	}
	args := append([]string{}, a.machine...)
	args = append(args,
		"-m", fmt.Sprint(o.memMB), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(k.dir, a.image),
		"-initrd", o.initrd,
		"-append", cmdline,
		// fds 3 and 4 (ExtraFiles): console, then the command's stdout.
		"-chardev", "file,id=con,path=/dev/fd/3", "-serial", "chardev:con",
		"-chardev", "file,id=out,path=/dev/fd/4",
	)
	args = append(args, a.stdoutArgs...)
	cmd := exec.Command(qemu, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{conW, outW}
	err = cmd.Start()
	conW.Close()
	outW.Close()
	if err != nil {
		res.err = err
		return res
	}

	var timedOut atomic.Bool
	stop := make(chan struct{})
	go func() {
		t := time.NewTimer(o.timeout)
		defer t.Stop()
		select {
		case <-t.C:
			timedOut.Store(true)
			_ = cmd.Process.Kill()
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		case <-stop:
		}
	}()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		if o.stdout != nil {
			_, _ = io.Copy(o.stdout, outR)
		} else {
			_, _ = io.Copy(io.Discard, outR)
		}
	}()

	r := bufio.NewReaderSize(conR, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			line = strings.ReplaceAll(line, "\r", "")
			res.parse(line)
			o.console(line)
		}
		if err != nil {
			break
		}
	}
	<-copied
	err = cmd.Wait()
	close(stop)
	res.timedOut = timedOut.Load()
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.qemuStatus = 0
	case errors.As(err, &ee) && ee.Exited():
		res.qemuStatus = ee.ExitCode()
	}
	if ctx.Err() != nil && !res.timedOut {
		res.err = ctx.Err()
	}
	return res
}

func (res *vmResult) parse(line string) {
	if pkg, ok := strings.CutPrefix(line, "vminit: running "); ok {
		res.running, _, _ = strings.Cut(pkg, " ")
		return
	}
	l, ok := vmproto.Parse(line)
	if !ok {
		return
	}
	switch l.Kind {
	case "RESULT":
		res.results = append(res.results, l.Result())
	case "DONE":
		d := l.Done()
		res.done = &d
	case "EXIT":
		n := l.Int("status")
		res.exit = &n
	case "ERROR":
		res.errors = append(res.errors, l.Text)
	}
}

// verdict decides whether a test-mode boot passed: every expected binary
// reported PASS, /init said DONE PASS and QEMU's exit status agrees. Each
// reason says what went wrong.
func (res *vmResult) verdict(a *arch, expected []string) (pass bool, reasons []string) {
	if res.err != nil {
		reasons = append(reasons, res.err.Error())
	}
	if res.timedOut {
		msg := fmt.Sprintf("the guest hung: killed after %v", res.elapsed.Round(time.Second))
		if res.running != "" && (len(res.results) == 0 || res.results[len(res.results)-1].Pkg != res.running) {
			msg += " while running " + res.running
		}
		reasons = append(reasons, msg)
	}
	reasons = append(reasons, res.errors...)
	seen := map[string]vmproto.Result{}
	for _, r := range res.results {
		seen[r.Pkg] = r
		if r.Status != vmproto.Pass {
			reasons = append(reasons, fmt.Sprintf("%s failed", r.Pkg))
		}
	}
	for _, p := range expected {
		if _, ok := seen[p]; !ok {
			reasons = append(reasons, fmt.Sprintf("%s: no result (the guest died or hung before it finished)", p))
		}
	}
	switch {
	case res.done == nil:
		reasons = append(reasons, "the guest never reported DONE")
	case res.done.Status != vmproto.Pass:
		if len(reasons) == 0 {
			reasons = append(reasons, "the guest reported failure")
		}
	case res.qemuStatus != a.passStatus && !res.timedOut && res.err == nil:
		reasons = append(reasons, fmt.Sprintf("QEMU exited with status %d, want %d for a pass", res.qemuStatus, a.passStatus))
	}
	return len(reasons) == 0, reasons
}
