// Command vmrunner runs heapd's tests on real Linux kernels in QEMU.
//
//	vmrunner test [-kernel 6.1,6.12] [-pkg ./dmabuf] [-run REGEX]
//	vmrunner run  [-kernel 6.1] -cmd 'heapctl heaps -o json'
//	vmrunner run  [-kernel 6.1] -- heapctl heaps -o json
//
// It builds every test binary of the module (CGO_ENABLED=0 go test -c),
// the commands under cmd/ and the guest's /init (test/vm/cmd/vminit), packs
// them with the kernels' modules and a mirror of the repository into a
// newc initramfs, boots each kernel (test/vm/build-kernel.sh builds or finds
// it) and reports. In test mode every binary runs with -test.v and
// HEAPD_REQUIRE_DEVICES=1; the run ends with one line per kernel
//
//	VMTEST RESULT: PASS kernel=6.1 binaries=12 passed=12 failed=0 skips=0 tests=87 time=31.2s
//
// and the exit status is 0 only when every kernel passed. In run mode the
// command's stdout (carried over its own serial port) is this program's
// stdout, the guest console goes to stderr, and the exit status is the
// command's. See docs/testing.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses besides a run-mode command's own.
const (
	exitFail  = 1
	exitUsage = 2
	exitError = 125 // the runner itself failed (build, QEMU missing, …)
)

type options struct {
	mode        string
	arch        *arch
	kernels     []*kernel
	pkgs        []string
	run         string
	skip        string
	testFlags   []string
	buildFlags  []string
	exclude     *regexp.Regexp
	timeout     time.Duration
	testTimeout time.Duration
	memMB       int
	append      string
	parallel    int
	keep        bool
	verbose     bool
	argv        []string
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `usage: vmrunner test [flags]
       vmrunner run [flags] (-cmd 'COMMAND LINE' | -- ARGV...)

flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vmrunner", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kernels := fs.String("kernel", "6.1", "kernels to boot: comma- or space-separated versions (6.1, 6.12), each optionally `VERSION=DIR` with an artifact directory of build-kernel.sh")
	archName := fs.String("arch", "amd64", "guest configuration: "+strings.Join(archNames(), ", ")+" (armhf binaries on the arm64 kernel)")
	pkgs := fs.String("pkg", "", "comma- or space-separated package patterns whose tests to run (default ./...)")
	fs.StringVar(&o.run, "run", "", "run only tests matching `REGEX` (-test.run)")
	fs.StringVar(&o.skip, "skip", "", "skip tests matching `REGEX` (-test.skip; such tests are not run, not counted as skips)")
	testFlags := fs.String("testflags", "", "more flags for every test binary, e.g. '-test.count=3'")
	buildFlags := fs.String("buildflags", "", "go build flags for the commands under cmd/, e.g. \"-trimpath -ldflags='-s -w'\" (make vmtest passes make dist's)")
	exclude := fs.String("exclude", `/test/vm/cmd/`, "leave out packages whose import path matches `REGEX` (the tier's host-side tools by default)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "kill a guest that has not finished after this long (counts as a failure)")
	fs.DurationVar(&o.testTimeout, "test-timeout", 5*time.Minute, "-test.timeout for each test binary")
	fs.IntVar(&o.memMB, "mem", 1024, "guest memory in MiB")
	fs.StringVar(&o.append, "append", "", "extra kernel command line, e.g. 'drm.debug=0x1'")
	fs.IntVar(&o.parallel, "parallel", runtime.NumCPU(), "boot up to this many kernels at once")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (initramfs, binaries) and print its path")
	fs.BoolVar(&o.verbose, "v", false, "run mode: show the guest's own messages too")
	cmdline := fs.String("cmd", "", "run mode: the command line, split on blanks with simple quoting (no shell)")

	if len(args) == 0 || (args[0] != vmproto.ModeTest && args[0] != vmproto.ModeRun) {
		usage(stderr, fs)
		return nil, errors.New("first argument must be test or run")
	}
	o.mode = args[0]
	if err := fs.Parse(args[1:]); err != nil {
		usage(stderr, fs)
		return nil, err
	}
	if o.arch = lookupArch(*archName); o.arch == nil {
		return nil, fmt.Errorf("unknown -arch %q (want one of %s)", *archName, strings.Join(archNames(), ", "))
	}
	for _, spec := range fields(*kernels) {
		label, dir, _ := strings.Cut(spec, "=")
		o.kernels = append(o.kernels, &kernel{label: label, dir: dir})
	}
	if len(o.kernels) == 0 {
		return nil, errors.New("no -kernel")
	}
	o.pkgs = fields(*pkgs)
	var err error
	if o.testFlags, err = splitCommand(*testFlags); err != nil {
		return nil, fmt.Errorf("-testflags: %w", err)
	}
	if o.buildFlags, err = splitCommand(*buildFlags); err != nil {
		return nil, fmt.Errorf("-buildflags: %w", err)
	}
	if *exclude != "" {
		if o.exclude, err = regexp.Compile(*exclude); err != nil {
			return nil, fmt.Errorf("-exclude: %w", err)
		}
	}
	switch o.mode {
	case vmproto.ModeRun:
		if len(o.kernels) != 1 {
			return nil, errors.New("run mode boots exactly one -kernel")
		}
		switch {
		case *cmdline != "" && fs.NArg() > 0:
			return nil, errors.New("give the command either with -cmd or after --, not both")
		case *cmdline != "":
			if o.argv, err = splitCommand(*cmdline); err != nil {
				return nil, fmt.Errorf("-cmd: %w", err)
			}
		default:
			o.argv = fs.Args()
		}
		if len(o.argv) == 0 {
			return nil, errors.New("run mode needs a command (-cmd or after --)")
		}
	case vmproto.ModeTest:
		if fs.NArg() > 0 {
			return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
		}
		if len(o.pkgs) == 0 {
			o.pkgs = []string{"./..."}
		}
	}
	if o.parallel < 1 {
		o.parallel = 1
	}
	return o, nil
}

func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vmrunner: %v\n", err)
		return exitUsage
	}
	code, err := runE(ctx, o, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vmrunner: %v\n", err)
		if code == 0 {
			code = exitError
		}
	}
	return code
}

func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "vmrunner: "+format+"\n", args...)
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the heapd module")
	}
	return filepath.Dir(gomod), nil
}

// resolveKernels builds or finds each kernel without a directory.
func resolveKernels(ctx context.Context, root string, o *options, stderr io.Writer) error {
	for _, k := range o.kernels {
		if k.dir == "" {
			cmd := exec.CommandContext(ctx, filepath.Join(root, "test", "vm", "build-kernel.sh"), k.label)
			cmd.Env = append(os.Environ(), "HEAPD_VM_ARCH="+o.arch.kernelArch)
			cmd.Stderr = stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("build-kernel.sh %s: %w", k.label, err)
			}
			lines := strings.Fields(string(out))
			if len(lines) == 0 {
				return fmt.Errorf("build-kernel.sh %s printed no directory", k.label)
			}
			k.dir = lines[len(lines)-1]
		}
		if err := k.load(o.arch); err != nil {
			return err
		}
	}
	return nil
}

func runE(ctx context.Context, o *options, stdout, stderr io.Writer) (int, error) {
	start := time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		return exitError, err
	}
	work, err := os.MkdirTemp("", "heapd-vm-")
	if err != nil {
		return exitError, err
	}
	if o.keep {
		defer logf(stderr, "kept %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	// Kernels (minutes when cold, milliseconds when cached) and Go builds
	// run side by side.
	kernelErr := make(chan error, 1)
	go func() { kernelErr <- resolveKernels(ctx, root, o, stderr) }()
	im, expected, err := buildImage(ctx, root, work, o, stderr)
	if kerr := <-kernelErr; kerr != nil {
		return exitError, kerr
	}
	if err != nil {
		return exitError, err
	}
	im.modules = map[string]string{}
	for _, k := range o.kernels {
		if d, ok := im.modules[k.release]; ok && d != filepath.Join(k.dir, "modules") {
			return exitError, fmt.Errorf("two kernels with release %s in one run", k.release)
		}
		im.modules[k.release] = filepath.Join(k.dir, "modules")
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	t := time.Now()
	if err := im.write(initrd); err != nil {
		return exitError, fmt.Errorf("initramfs: %w", err)
	}
	if st, err := os.Stat(initrd); err == nil {
		// The kernel holds the initramfs and its unpacked copy at once:
		// leave room for both and for the tests.
		if need := int(3*st.Size()>>20) + 256; o.memMB < need {
			logf(stderr, "raising guest memory from %d to %d MiB for a %d MiB initramfs", o.memMB, need, st.Size()>>20)
			o.memMB = need
		}
		logf(stderr, "initramfs %.1f MiB (%d test binaries, %d commands) packed in %.2fs; ready %.1fs after start",
			float64(st.Size())/(1<<20), len(im.tests), len(im.bin), time.Since(t).Seconds(), time.Since(start).Seconds())
	}

	bo := bootOptions{initrd: initrd, memMB: o.memMB, append: o.append, timeout: o.timeout}
	if o.mode == vmproto.ModeRun {
		return runMode(ctx, o, bo, stdout, stderr)
	}
	return testMode(ctx, o, bo, expected, stdout)
}

// buildImage builds the binaries and describes the initramfs. expected
// lists the import paths of the test binaries.
func buildImage(ctx context.Context, root, work string, o *options, stderr io.Writer) (*image, []string, error) {
	t := time.Now()
	env := goEnv(o.arch)
	im := &image{root: root, init: filepath.Join(work, "bin", "vminit")}
	im.config = vmproto.Config{
		Mode:        o.mode,
		Modules:     defaultModules,
		TestTimeout: o.testTimeout.String(),
		Argv:        o.argv,
		StdoutTTY:   o.arch.stdoutTTY,
	}
	if o.run != "" {
		im.config.TestArgs = append(im.config.TestArgs, "-test.run="+o.run)
	}
	if o.skip != "" {
		im.config.TestArgs = append(im.config.TestArgs, "-test.skip="+o.skip)
	}
	im.config.TestArgs = append(im.config.TestArgs, o.testFlags...)

	// Commands: every main package under cmd/, plus /init.
	mains := []string{"./test/vm/cmd/vminit"}
	if st, err := os.Stat(filepath.Join(root, "cmd")); err == nil && st.IsDir() {
		pkgs, err := listPackages(ctx, root, env, []string{"./cmd/..."})
		if err != nil {
			return nil, nil, err
		}
		for _, p := range pkgs {
			if p.Name == "main" {
				mains = append(mains, p.ImportPath)
				im.bin = append(im.bin, filepath.Join(work, "bin", filepath.Base(p.ImportPath)))
			}
		}
	}
	var testPkgs []goPkg
	if len(o.pkgs) > 0 {
		pkgs, err := listPackages(ctx, root, env, o.pkgs)
		if err != nil {
			return nil, nil, err
		}
		testPkgs = filterPackages(pkgs, o.exclude)
		if len(testPkgs) == 0 && o.mode == vmproto.ModeTest {
			return nil, nil, fmt.Errorf("no packages with tests match %s", strings.Join(o.pkgs, " "))
		}
	}

	var (
		wg              sync.WaitGroup
		cmdErr, testErr error
		srcErr, xErr    error
	)
	wg.Add(4)
	go func() {
		defer wg.Done()
		cmdErr = buildCommands(ctx, root, filepath.Join(work, "bin"), env, o.buildFlags, mains)
	}()
	go func() {
		defer wg.Done()
		im.tests, testErr = buildTests(ctx, root, work, env, testPkgs)
	}()
	go func() {
		defer wg.Done()
		im.sources, srcErr = sourceFiles(root)
	}()
	go func() {
		defer wg.Done()
		im.extra, xErr = buildVMStatic(ctx, work, env, testPkgs)
	}()
	wg.Wait()
	if err := errors.Join(cmdErr, testErr, srcErr, xErr); err != nil {
		return nil, nil, err
	}
	var expected []string
	for _, b := range im.tests {
		expected = append(expected, b.pkg.ImportPath)
		im.config.Tests = append(im.config.Tests, vmproto.Test{
			Pkg: b.pkg.ImportPath, Binary: b.guestPath(), Dir: filepath.Dir(b.guestPath()),
		})
	}
	logf(stderr, "built %d test binaries and %d commands in %.1fs", len(im.tests), len(mains), time.Since(t).Seconds())
	return im, expected, nil
}

// lineWriter writes whole lines from several goroutines, each line with
// its VM's prefix.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) line(prefix, s string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	fmt.Fprintf(lw.w, "%s%s\n", prefix, s)
}

func testMode(ctx context.Context, o *options, bo bootOptions, expected []string, stdout io.Writer) (int, error) {
	lw := &lineWriter{w: stdout}
	results := make([]*vmResult, len(o.kernels))
	sem := make(chan struct{}, o.parallel)
	var wg sync.WaitGroup
	for i, k := range o.kernels {
		prefix := ""
		if len(o.kernels) > 1 {
			prefix = "[" + k.label + "] "
		}
		b := bo
		b.console = func(s string) { lw.line(prefix, s) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			lw.line(prefix, fmt.Sprintf("vmrunner: booting Linux %s (%s), timeout %v", k.label, k.release, o.timeout))
			results[i] = boot(ctx, o.arch, k, b)
		}()
	}
	wg.Wait()

	// Summary: per binary, then one result line per kernel, then the plain
	// "N passed, N failed" line test-report readers understand.
	fmt.Fprintln(stdout)
	var tests, failedTests, skips int
	allPass := true
	var lines []string
	for _, res := range results {
		k := res.kernel
		byPkg := map[string]vmproto.Result{}
		for _, r := range res.results {
			byPkg[r.Pkg] = r
		}
		var passedBins, failedBins int
		for _, p := range expected {
			r, ok := byPkg[p]
			switch {
			case !ok:
				fmt.Fprintf(stdout, "VMTEST %-4s MISSING %s\n", k.label, p)
				failedBins++
				failedTests++
			default:
				fmt.Fprintf(stdout, "VMTEST %-4s %s %s (passed=%d failed=%d skips=%d exit=%d %s)\n",
					k.label, r.Status, p, r.Passed, r.Failed, r.Skips, r.Exit, r.Time)
				tests += r.Passed
				skips += r.Skips
				failedTests += r.Failed
				if r.Status == vmproto.Pass {
					passedBins++
				} else {
					failedBins++
					if r.Failed == 0 && r.Skips == 0 {
						failedTests++ // crashed, or kernel trouble: count it
					}
				}
			}
		}
		pass, reasons := res.verdict(o.arch, expected)
		word := vmproto.Pass
		if !pass {
			word = vmproto.Fail
			allPass = false
			for _, r := range reasons {
				fmt.Fprintf(stdout, "VMTEST %-4s reason: %s\n", k.label, r)
			}
			if len(expected) == 0 || failedBins == 0 {
				failedTests++
			}
		}
		kskips := 0
		ktests := 0
		for _, r := range res.results {
			kskips += r.Skips
			ktests += r.Passed
		}
		lines = append(lines, fmt.Sprintf("VMTEST RESULT: %s arch=%s kernel=%s binaries=%d passed=%d failed=%d skips=%d tests=%d time=%.1fs",
			word, o.arch.name, k.label, len(expected), passedBins, failedBins, kskips, ktests, res.elapsed.Seconds()))
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	fmt.Fprintf(stdout, "vmtest: %d passed, %d failed, %d skipped\n", tests, failedTests, skips)
	if ctx.Err() != nil {
		return exitFail, ctx.Err()
	}
	if !allPass {
		return exitFail, nil
	}
	return 0, nil
}

func runMode(ctx context.Context, o *options, bo bootOptions, stdout, stderr io.Writer) (int, error) {
	lw := &lineWriter{w: stderr}
	bo.stdout = stdout
	bo.console = func(s string) {
		// The guest's own chatter and status lines only with -v; errors
		// are reported after the run.
		if !o.verbose && (s == "" || strings.HasPrefix(s, "vminit: ") || strings.Contains(s, vmproto.Marker)) {
			return
		}
		lw.line("", s)
	}
	res := boot(ctx, o.arch, o.kernels[0], bo)
	switch {
	case res.err != nil:
		return exitError, res.err
	case res.timedOut:
		return exitFail, fmt.Errorf("the guest hung: killed after %v", o.timeout)
	case res.exit == nil:
		return exitError, fmt.Errorf("the guest died before the command finished (QEMU status %d)", res.qemuStatus)
	}
	for _, e := range res.errors {
		logf(stderr, "warning: guest: %s", e)
	}
	return *res.exit, nil
}
