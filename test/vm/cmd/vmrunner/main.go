// Command vmrunner runs heapd's tests on real Linux kernels in QEMU.
//
//	vmrunner test [-arch amd64] [-kernel 6.1,6.12] [-pkg ./dmabuf] [-run REGEX]
//	vmrunner test -matrix 'amd64=6.1,6.12 arm64=6.1 arm=6.1 arm-on-arm64=6.1'
//	vmrunner run  [-arch arm64] [-kernel 6.1] -cmd 'heapctl heaps -o json'
//	vmrunner run  [-kernel 6.1] -- heapctl heaps -o json
//
// For each architecture (amd64, arm64, arm, or arm-on-arm64: armhf binaries
// on the arm64 kernel) it builds every test binary of the module
// (CGO_ENABLED=0 go test -c), the commands under cmd/ and the guest's /init
// (test/vm/cmd/vminit), packs them with the kernels' modules and a mirror
// of the repository into a newc initramfs, boots each kernel
// (test/vm/build-kernel.sh builds or finds it) and reports; guests boot
// side by side (-parallel) while the next architecture builds. In test mode
// every binary runs with -test.v and HEAPD_REQUIRE_DEVICES=1; the run ends
// with one line per guest
//
//	VMTEST RESULT: PASS arch=amd64 kernel=6.1 binaries=12 passed=12 failed=0 skips=0 tests=87 time=31.2s
//
// and the exit status is 0 only when every guest passed. In run mode the
// command's stdout (carried over its own serial port, or a virtio console
// on Arm) is this program's stdout, the guest console goes to stderr, and
// the exit status is the command's. See docs/testing.md.
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
	mode string
	// matrix is every architecture of the run with its kernels (one entry
	// unless -matrix gave several).
	matrix      []*archRun
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
	matrix := fs.String("matrix", "", "test mode: several architectures in one run, each with its kernels, instead of -arch and -kernel: `'ARCH=K[,K] ARCH=K …'`, e.g. 'amd64=6.1,6.12 arm64=6.1'; their guests boot side by side (-parallel)")

	if len(args) == 0 || (args[0] != vmproto.ModeTest && args[0] != vmproto.ModeRun) {
		usage(stderr, fs)
		return nil, errors.New("first argument must be test or run")
	}
	o.mode = args[0]
	if err := fs.Parse(args[1:]); err != nil {
		usage(stderr, fs)
		return nil, err
	}
	if *matrix != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["arch"] || set["kernel"] {
			return nil, errors.New("give either -matrix or -arch and -kernel, not both")
		}
		for _, spec := range strings.Fields(*matrix) {
			name, ks, _ := strings.Cut(spec, "=")
			r, err := newArchRun(name, ks)
			if err != nil {
				return nil, fmt.Errorf("-matrix %s: %w", spec, err)
			}
			o.matrix = append(o.matrix, r)
		}
	} else {
		r, err := newArchRun(*archName, *kernels)
		if err != nil {
			return nil, err
		}
		o.matrix = []*archRun{r}
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
		if len(o.matrix) != 1 || len(o.matrix[0].kernels) != 1 {
			return nil, errors.New("run mode boots exactly one -arch and one -kernel")
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

// archRun is one architecture of a run and the kernels it boots.
type archRun struct {
	arch    *arch
	kernels []*kernel
	// Filled in as the run goes: the test binaries' import paths, and the
	// initramfs's boot options.
	expected []string
	boot     bootOptions
}

// newArchRun parses an architecture name and its kernel list.
func newArchRun(name, kernels string) (*archRun, error) {
	a := lookupArch(name)
	if a == nil {
		return nil, fmt.Errorf("unknown -arch %q (want one of %s)", name, strings.Join(archNames(), ", "))
	}
	r := &archRun{arch: a}
	for _, spec := range fields(kernels) {
		label, dir, _ := strings.Cut(spec, "=")
		r.kernels = append(r.kernels, &kernel{label: label, dir: dir})
	}
	if len(r.kernels) == 0 {
		return nil, fmt.Errorf("no kernel for %s", a.name)
	}
	return r, nil
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

// resolveKernels builds or finds each kernel of r without a directory.
func resolveKernels(ctx context.Context, root string, r *archRun, stderr io.Writer) error {
	for _, k := range r.kernels {
		if k.dir == "" {
			cmd := exec.CommandContext(ctx, filepath.Join(root, "test", "vm", "build-kernel.sh"), k.label)
			cmd.Env = append(os.Environ(), "HEAPD_VM_ARCH="+r.arch.kernelArch)
			cmd.Stderr = stderr
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("build-kernel.sh %s (%s): %w", k.label, r.arch.kernelArch, err)
			}
			lines := strings.Fields(string(out))
			if len(lines) == 0 {
				return fmt.Errorf("build-kernel.sh %s printed no directory", k.label)
			}
			k.dir = lines[len(lines)-1]
		}
		if err := k.load(r.arch); err != nil {
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
	if o.mode == vmproto.ModeRun {
		r := o.matrix[0]
		if err := prepare(ctx, root, filepath.Join(work, r.arch.name), o, r, start, stderr); err != nil {
			return exitError, err
		}
		return runMode(ctx, o, r, stdout, stderr)
	}
	return testMode(ctx, root, work, o, start, stdout, stderr)
}

// prepare finds r's kernels and builds its initramfs in dir, and fills in
// r.expected and r.boot.
func prepare(ctx context.Context, root, dir string, o *options, r *archRun, start time.Time, stderr io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Kernels (minutes when cold, milliseconds when cached) and Go builds
	// run side by side.
	kernelErr := make(chan error, 1)
	go func() { kernelErr <- resolveKernels(ctx, root, r, stderr) }()
	im, expected, err := buildImage(ctx, root, dir, o, r.arch, stderr)
	if kerr := <-kernelErr; kerr != nil {
		return kerr
	}
	if err != nil {
		return err
	}
	im.modules = map[string]string{}
	for _, k := range r.kernels {
		if d, ok := im.modules[k.release]; ok && d != filepath.Join(k.dir, "modules") {
			return fmt.Errorf("two %s kernels with release %s in one run", r.arch.name, k.release)
		}
		im.modules[k.release] = filepath.Join(k.dir, "modules")
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	t := time.Now()
	if err := im.write(initrd); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	mem := o.memMB
	if st, err := os.Stat(initrd); err == nil {
		// The kernel holds the initramfs and its unpacked copy at once:
		// leave room for both and for the tests.
		if need := int(3*st.Size()>>20) + 256; mem < need {
			logf(stderr, "%s: raising guest memory from %d to %d MiB for a %d MiB initramfs", r.arch.name, mem, need, st.Size()>>20)
			mem = need
		}
		logf(stderr, "%s: initramfs %.1f MiB (%d test binaries, %d commands) packed in %.2fs; ready %.1fs after start",
			r.arch.name, float64(st.Size())/(1<<20), len(im.tests), len(im.bin), time.Since(t).Seconds(), time.Since(start).Seconds())
	}
	r.expected = expected
	r.boot = bootOptions{initrd: initrd, memMB: mem, append: o.append, timeout: o.timeout}
	return nil
}

// buildImage builds the binaries and describes the initramfs. expected
// lists the import paths of the test binaries.
func buildImage(ctx context.Context, root, work string, o *options, a *arch, stderr io.Writer) (*image, []string, error) {
	t := time.Now()
	env := goEnv(a)
	im := &image{root: root, init: filepath.Join(work, "bin", "vminit")}
	im.config = vmproto.Config{
		Mode:        o.mode,
		Modules:     defaultModules,
		TestTimeout: o.testTimeout.String(),
		Argv:        o.argv,
		StdoutTTY:   a.stdoutTTY,
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
	logf(stderr, "%s: built %d test binaries and %d commands in %.1fs", a.name, len(im.tests), len(mains), time.Since(t).Seconds())
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

// testMode prepares each architecture in turn and boots its kernels as
// soon as its initramfs is ready, up to o.parallel guests at once (each
// QEMU under TCG keeps one core busy), so that one architecture's build
// overlaps another's tests.
func testMode(ctx context.Context, root, work string, o *options, start time.Time, stdout, stderr io.Writer) (int, error) {
	lw := &lineWriter{w: stdout}
	total := 0
	for _, r := range o.matrix {
		total += len(r.kernels)
	}
	type slot struct {
		r   *archRun
		k   *kernel
		res *vmResult
	}
	var slots []*slot
	sem := make(chan struct{}, o.parallel)
	var wg sync.WaitGroup
	for i, r := range o.matrix {
		if err := prepare(ctx, root, filepath.Join(work, fmt.Sprintf("%d-%s", i, r.arch.name)), o, r, start, stderr); err != nil {
			// The others still run; this one fails with the reason.
			logf(stderr, "%s: %v", r.arch.name, err)
			for _, k := range r.kernels {
				slots = append(slots, &slot{r: r, k: k, res: &vmResult{arch: r.arch, kernel: k, err: err, qemuStatus: -1}})
			}
			continue
		}
		for _, k := range r.kernels {
			sl := &slot{r: r, k: k}
			slots = append(slots, sl)
			prefix := ""
			if total > 1 {
				prefix = "[" + targetLabel(o, r, k) + "] "
			}
			b := r.boot
			b.console = func(s string) { lw.line(prefix, s) }
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				lw.line(prefix, fmt.Sprintf("vmrunner: booting Linux %s (%s) for %s, timeout %v", k.label, k.release, r.arch.name, o.timeout))
				sl.res = boot(ctx, r.arch, k, b)
			}()
		}
	}
	wg.Wait()

	// Summary: per binary, then one result line per kernel, then the plain
	// "N passed, N failed" line test-report readers understand.
	fmt.Fprintln(stdout)
	var tests, failedTests, skips int
	allPass := true
	var lines []string
	for _, sl := range slots {
		res, k, expected := sl.res, sl.k, sl.r.expected
		label := targetLabel(o, sl.r, k)
		byPkg := map[string]vmproto.Result{}
		for _, r := range res.results {
			byPkg[r.Pkg] = r
		}
		var passedBins, failedBins int
		for _, p := range expected {
			r, ok := byPkg[p]
			switch {
			case !ok:
				fmt.Fprintf(stdout, "VMTEST %-4s MISSING %s\n", label, p)
				failedBins++
				failedTests++
			default:
				fmt.Fprintf(stdout, "VMTEST %-4s %s %s (passed=%d failed=%d skips=%d exit=%d %s)\n",
					label, r.Status, p, r.Passed, r.Failed, r.Skips, r.Exit, r.Time)
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
		pass, reasons := res.verdict(sl.r.arch, expected)
		word := vmproto.Pass
		if !pass {
			word = vmproto.Fail
			allPass = false
			for _, r := range reasons {
				fmt.Fprintf(stdout, "VMTEST %-4s reason: %s\n", label, r)
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
			word, sl.r.arch.name, k.label, len(expected), passedBins, failedBins, kskips, ktests, res.elapsed.Seconds()))
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	fmt.Fprintf(stdout, "vmtest: %d passed, %d failed, %d skipped (%.0fs)\n", tests, failedTests, skips, time.Since(start).Seconds())
	if ctx.Err() != nil {
		return exitFail, ctx.Err()
	}
	if !allPass {
		return exitFail, nil
	}
	return 0, nil
}

// targetLabel names one guest in output: the kernel alone when the run has
// one architecture (as before -matrix), else ARCH/KERNEL.
func targetLabel(o *options, r *archRun, k *kernel) string {
	if len(o.matrix) == 1 {
		return k.label
	}
	return r.arch.name + "/" + k.label
}

func runMode(ctx context.Context, o *options, r *archRun, stdout, stderr io.Writer) (int, error) {
	lw := &lineWriter{w: stderr}
	bo := r.boot
	bo.stdout = stdout
	bo.console = func(s string) {
		// The guest's own chatter and status lines only with -v; errors
		// are reported after the run.
		if !o.verbose && (s == "" || strings.HasPrefix(s, "vminit: ") || strings.Contains(s, vmproto.Marker)) {
			return
		}
		lw.line("", s)
	}
	res := boot(ctx, r.arch, r.kernels[0], bo)
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
