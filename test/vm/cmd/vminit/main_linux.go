//go:build linux

package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

func main() {
	code := run()
	// The status line must reach the host before QEMU exits: wait until
	// the serial port has sent everything.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	if err := hostExit(code); err != nil {
		status(fmt.Sprintf("ERROR host exit: %v; powering off without a status", err))
	}
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		status(fmt.Sprintf("ERROR power off: %v", err))
	}
	for { // PID 1 must not exit: the kernel would panic
		time.Sleep(time.Hour)
	}
}

// status prints a vmproto status line on the console.
func status(s string) { fmt.Printf("\n%s%s\n", vmproto.Marker, s) }

// run does the work and returns the byte for hostExit: 0 pass, 1 fail.
func run() byte {
	start := time.Now()
	var setupErrs []error
	fail := func(err error) {
		setupErrs = append(setupErrs, err)
		status("ERROR " + err.Error())
	}
	for _, err := range mountAll() {
		fail(err)
	}
	cfg, err := readConfig()
	if err != nil {
		fail(err)
		return 1
	}
	kmsg := openKmsg()
	if err := loopbackUp(); err != nil {
		fail(err)
	}

	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	modDir := filepath.Join(vmproto.ModulesDir, release)
	env := []string{
		"PATH=/bin", "HOME=/root", "TMPDIR=/tmp", "TERM=dumb",
		vmproto.EnvRequireDevices + "=1",
		vmproto.EnvVM + "=1",
		vmproto.EnvKernel + "=" + os.Getenv(vmproto.EnvKernel),
		vmproto.EnvModules + "=" + modDir,
	}
	env = append(env, cfg.Env...)
	// exec.Command looks names up in our own PATH, not the child's.
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	fmt.Printf("vminit: kernel %s (%s), %d module(s) to load, mode %s\n",
		os.Getenv(vmproto.EnvKernel), release, len(cfg.Modules), cfg.Mode)

	if err := loadModules(modDir, cfg.Modules); err != nil {
		fail(err)
	}
	if trouble := kmsg.trouble(); trouble != "" {
		fail(fmt.Errorf("kernel trouble during boot and module loading:\n%s", trouble))
	}
	fmt.Printf("vminit: ready after %.2fs\n", time.Since(start).Seconds())

	switch cfg.Mode {
	case vmproto.ModeRun:
		code := runCommand(cfg, env)
		status(fmt.Sprintf("EXIT status=%d", code))
		if code != 0 {
			return 1
		}
		return 0
	case vmproto.ModeTest:
		done := runTests(cfg, env, kmsg)
		if len(setupErrs) > 0 {
			done.Status = vmproto.Fail
		}
		status(done.String())
		if done.Status != vmproto.Pass {
			return 1
		}
		return 0
	default:
		fail(fmt.Errorf("unknown mode %q", cfg.Mode))
		return 1
	}
}

func readConfig() (*vmproto.Config, error) {
	b, err := os.ReadFile(vmproto.ConfigPath)
	if err != nil {
		return nil, err
	}
	cfg := new(vmproto.Config)
	if err := json.Unmarshal(b, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", vmproto.ConfigPath, err)
	}
	return cfg, nil
}

func mountAll() []error {
	var errs []error
	for _, m := range []struct{ fstype, target, data string }{
		{"proc", "/proc", ""},
		{"sysfs", "/sys", ""},
		{"devtmpfs", "/dev", "mode=0755"},
		{"debugfs", "/sys/kernel/debug", ""},
		{"tmpfs", "/tmp", "mode=1777"},
		{"tmpfs", "/dev/shm", "mode=1777"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errs
}

// loopbackUp brings lo up (the kernel then gives it 127.0.0.1), for tests
// that listen on TCP. Without networking or IPv4 there is nothing to do.
func loopbackUp() error {
	if _, err := os.Stat("/sys/class/net/lo"); err != nil {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return nil // no CONFIG_INET: lo exists but nothing listens on it
	}
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", os.NewSyscallError("SIOCGIFFLAGS", err))
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", os.NewSyscallError("SIOCSIFFLAGS", err))
	}
	return nil
}

// --- modules

type modinfo struct {
	path    string
	depends []string
	params  map[string]bool
}

// readModinfo reads the .modinfo section of a .ko: NUL-separated key=value
// strings, among them depends=a,b and parm=name:description.
func readModinfo(path string) (*modinfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	mi := &modinfo{path: path, params: map[string]bool{}}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					mi.depends = append(mi.depends, d)
				}
			}
		case "parm", "parmtype":
			name, _, _ := strings.Cut(v, ":")
			mi.params[name] = true
		}
	}
	return mi, nil
}

// modName is the kernel's spelling of a module name: '-' and '_' are the
// same.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

func loadModules(dir string, want []vmproto.Module) error {
	if len(want) == 0 {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ko"))
	if len(files) == 0 {
		return fmt.Errorf("no kernel modules in %s (built for another kernel?)", dir)
	}
	infos := map[string]*modinfo{}
	for _, f := range files {
		mi, err := readModinfo(f)
		if err != nil {
			return err
		}
		infos[modName(strings.TrimSuffix(filepath.Base(f), ".ko"))] = mi
	}
	loaded := map[string]bool{}
	var load func(name, params string, depth int) error
	load = func(name, params string, depth int) error {
		name = modName(name)
		if loaded[name] {
			return nil
		}
		mi, ok := infos[name]
		if !ok {
			return fmt.Errorf("module %s: no %s.ko in %s", name, name, dir)
		}
		if depth > 20 {
			return fmt.Errorf("module %s: dependency loop", name)
		}
		for _, d := range mi.depends {
			if err := load(d, "", depth+1); err != nil {
				return fmt.Errorf("%w (needed by %s)", err, name)
			}
		}
		t := time.Now()
		f, err := os.Open(mi.path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), params, 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s %q: %w", name, params, err)
		}
		loaded[name] = true
		fmt.Printf("vminit: loaded %s %s(%.0f ms)\n", name, params, float64(time.Since(t).Microseconds())/1000)
		return nil
	}
	for _, m := range want {
		mi, ok := infos[modName(m.Name)]
		if !ok {
			return fmt.Errorf("module %s: no .ko in %s", m.Name, dir)
		}
		var params []string
		for _, p := range m.Params {
			name, _, _ := strings.Cut(p, "=")
			if mi.params[name] {
				params = append(params, p)
			} else {
				fmt.Printf("vminit: %s has no parameter %s on this kernel: dropped\n", m.Name, name)
			}
		}
		if err := load(m.Name, strings.Join(params, " "), 0); err != nil {
			return err
		}
		if m.DRM {
			if err := waitDRM(m.Name, 10*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitDRM waits until a DRM device created by the named driver has its
// /dev/dri node. vgem and vkms register a platform device named after the
// driver, so /sys/class/drm/cardN/device points at …/platform/<name>.
func waitDRM(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir("/sys/class/drm")
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "card") || strings.Contains(e.Name(), "-") {
				continue
			}
			dev, err := os.Readlink(filepath.Join("/sys/class/drm", e.Name(), "device"))
			if err != nil || filepath.Base(dev) != name {
				continue
			}
			if _, err := os.Stat(filepath.Join("/dev/dri", e.Name())); err == nil {
				fmt.Printf("vminit: %s is /dev/dri/%s\n", name, e.Name())
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no /dev/dri card for %s after %v", name, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- kernel log

// kmsgWatcher reads /dev/kmsg and spots oopses, BUGs and WARN splats.
type kmsgWatcher struct{ f *os.File }

var troubleRE = regexp.MustCompile(`^(?:Oops|BUG:|WARNING: CPU|Kernel panic|general protection fault|Call Trace:|kernel BUG)`)

// troubleMessage returns the message of a /dev/kmsg record
// ("prio,seq,usec,flags;message\n KEY=value…") and whether it marks an
// oops, a BUG or a WARN splat.
func troubleMessage(rec string) (string, bool) {
	rec, _, _ = strings.Cut(rec, "\n")
	_, msg, ok := strings.Cut(rec, ";")
	if !ok {
		return "", false
	}
	return msg, troubleRE.MatchString(msg)
}

func openKmsg() *kmsgWatcher {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		status("ERROR /dev/kmsg: " + err.Error() + " (kernel warnings will go unnoticed)")
		return &kmsgWatcher{}
	}
	return &kmsgWatcher{f: os.NewFile(uintptr(fd), "/dev/kmsg")}
}

// trouble returns the suspicious kernel log records since the last call.
func (k *kmsgWatcher) trouble() string {
	if k.f == nil {
		return ""
	}
	var out []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(int(k.f.Fd()), buf)
		if errors.Is(err, unix.EPIPE) { // overwritten records: go on
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		if msg, bad := troubleMessage(string(buf[:n])); bad {
			out = append(out, "  "+msg)
		}
	}
	return strings.Join(out, "\n")
}

// --- test mode

var (
	passRE = regexp.MustCompile(`^\s*--- PASS: `)
	failRE = regexp.MustCompile(`^\s*--- FAIL: `)
	skipRE = regexp.MustCompile(`^\s*--- SKIP: `)
)

func runTests(cfg *vmproto.Config, env []string, kmsg *kmsgWatcher) vmproto.Done {
	done := vmproto.Done{Status: vmproto.Pass, Binaries: len(cfg.Tests)}
	if len(cfg.Tests) == 0 {
		status("ERROR no test binaries to run")
		done.Status = vmproto.Fail
	}
	for _, t := range cfg.Tests {
		r := runTest(cfg, env, t)
		if trouble := kmsg.trouble(); trouble != "" {
			fmt.Printf("vminit: the kernel logged trouble while %s ran:\n%s\n", t.Pkg, trouble)
			r.Status = vmproto.Fail
		}
		status(r.String())
		done.Skips += r.Skips
		done.Tests += r.Passed
		if r.Status == vmproto.Pass {
			done.Passed++
		} else {
			done.Failed++
			done.Status = vmproto.Fail
		}
	}
	return done
}

func runTest(cfg *vmproto.Config, env []string, t vmproto.Test) (r vmproto.Result) {
	r = vmproto.Result{Status: vmproto.Fail, Pkg: t.Pkg, Exit: -1}
	args := []string{"-test.v"}
	if cfg.TestTimeout != "" {
		args = append(args, "-test.timeout="+cfg.TestTimeout)
	}
	args = append(args, cfg.TestArgs...)
	fmt.Printf("vminit: running %s (%s %s)\n", t.Pkg, t.Binary, strings.Join(args, " "))
	start := time.Now()
	defer func() { r.Time = time.Since(start).Round(time.Millisecond).String() }()

	cmd := exec.Command(t.Binary, args...)
	cmd.Dir = t.Dir
	cmd.Env = env
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Printf("vminit: %v\n", err)
		return r
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		fmt.Printf("vminit: start %s: %v\n", t.Binary, err)
		return r
	}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case passRE.MatchString(line):
			r.Passed++
		case failRE.MatchString(line):
			r.Failed++
		case skipRE.MatchString(line):
			r.Skips++
		}
		os.Stdout.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		fmt.Printf("vminit: reading %s output: %v\n", t.Pkg, err)
		_, _ = io.Copy(io.Discard, pr)
	}
	pr.Close()
	err = cmd.Wait()
	r.Exit = exitCode(cmd, err)
	if r.Skips > 0 {
		fmt.Printf("vminit: %s skipped %d test(s): the VM tier allows no skips\n", t.Pkg, r.Skips)
	}
	if r.Exit == 0 && r.Failed == 0 && r.Skips == 0 {
		r.Status = vmproto.Pass
	}
	return r
}

// exitCode is the shell's convention: 128+signal for a signalled process.
func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if err != nil && cmd.ProcessState.ExitCode() == 0 {
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

// --- run mode

func runCommand(cfg *vmproto.Config, env []string) int {
	if len(cfg.Argv) == 0 {
		status("ERROR run mode without a command")
		return 127
	}
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	// A test binary runs in its package directory, where its testdata is.
	if strings.HasSuffix(cfg.Argv[0], ".test") && strings.HasPrefix(cfg.Argv[0], "/src/") {
		cmd.Dir = filepath.Dir(cfg.Argv[0])
	}
	cmd.Stderr = os.Stderr
	cmd.Stdout = os.Stdout
	if cfg.StdoutTTY != "" {
		tty, err := openRaw(cfg.StdoutTTY)
		if err != nil {
			status("ERROR " + err.Error())
			return 125
		}
		defer func() {
			_ = unix.IoctlSetInt(int(tty.Fd()), unix.TCSBRK, 1) // drain
			tty.Close()
		}()
		cmd.Stdout = tty
	}
	err := cmd.Run()
	if cmd.ProcessState == nil {
		status("ERROR " + err.Error())
		return 127
	}
	return exitCode(cmd, err)
}

// openRaw opens a serial port with no output processing, so the command's
// stdout reaches the host byte for byte (no \n to \r\n).
func openRaw(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err == nil {
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		err = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: raw mode: %w", path, err)
	}
	return f, nil
}
