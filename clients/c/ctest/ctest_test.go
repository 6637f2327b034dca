package ctest

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

// The C programs every build makes (tests/ and the example).
var programs = []string{"ctest-fake", "ctest-daemon", "heapd-alloc-example"}

// Who the C tests run as besides the test's own user.
const (
	uidNobody = 65534 // allowed the system heap, within a quota
	uidNoRule = 65533 // matched by no rule: denied
)

// policy is the heapd.toml the daemons of these tests run with; see
// tests/ctest-daemon.c for what each case expects of it.
func policy() string {
	runner := "0"
	if uid := os.Getuid(); uid != 0 {
		runner = fmt.Sprintf("0, %d", uid)
	}
	return fmt.Sprintf(`# clients/c/ctest
[ledger]
release_interval = "100ms"

[[rule]]
name = "runner"
uid = [%s]
heaps = ["*"]

[[rule]]
name = "ctest-nobody"
uid = [%d]
heaps = ["system"]
max_alloc = "4MiB"

[rule.quota]
bytes = "8MiB"
buffers = 6
`, runner, uidNobody)
}

// build is one build of the C programs.
type build struct {
	name string
	dir  string
	env  []string // sanitizer settings
}

func (b build) path(prog string) string { return filepath.Join(b.dir, prog) }

// builds returns the builds to test. On the host: make test-bins, from
// source, into a directory every uid can read (the tests run some
// programs as other users). In the VM tier: the static programs the
// runner packed into vm-static/.
func builds(t *testing.T) []build {
	t.Helper()
	if testutil.Required() {
		dir, err := filepath.Abs("vm-static")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range programs {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Fatalf("%v: the VM runner must build the static C test programs on the host "+
					"(make -C clients/c/ctest vm-static OUT=DIR) and pack them into "+
					"clients/c/ctest/vm-static/ (docs/c-client.md, \"Tests\")", err)
			}
		}
		return []build{{name: "static", dir: dir}}
	}
	needTools(t)
	out := daemontest.TempDir(t)
	run(t, "", "make", "-s", "-j"+strconv.Itoa(runtime.NumCPU()), "-C", "..", "CC=gcc", "test-bins", "OUT="+out)
	sanitizers := []string{
		"ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1",
		"UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1",
	}
	return []build{
		{name: "werror", dir: filepath.Join(out, "werror")},
		{name: "asan", dir: filepath.Join(out, "asan"), env: sanitizers},
		{name: "static", dir: filepath.Join(out, "static")},
	}
}

// needTools skips the test, with a hint, where the C toolchain is missing.
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"make", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Missing(t, fmt.Sprintf("%s not found: the C client's tests need make and gcc "+
				"(Debian: apt-get install make gcc libc6-dev; gcc brings libasan8 and libubsan1)", tool))
		}
	}
}

// run runs a host tool in dir and fails the test with its output.
func run(t *testing.T, dir string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// cases lists a test program's cases by group.
func cases(t *testing.T, bin string) map[string][]string {
	t.Helper()
	out, err := exec.Command(bin, "-l").Output()
	if err != nil {
		t.Fatalf("%s -l: %v", bin, err)
	}
	groups := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		group, name, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("%s -l: bad line %q", bin, sc.Text())
		}
		groups[group] = append(groups[group], name)
	}
	return groups
}

// runner runs C test programs of one build.
type runner struct {
	b    build
	env  []string // added to the environment
	cred *syscall.Credential
}

// exec runs prog with args and returns its combined output and exit
// status.
func (r runner) exec(t *testing.T, prog string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := r.command(ctx, t, prog, args...)
	out, err := cmd.CombinedOutput()
	return status(t, prog, args, string(out), err)
}

// command is prog with args, in the runner's environment and as its user.
func (r runner) command(ctx context.Context, t *testing.T, prog string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, r.b.path(prog), args...)
	golden, err := filepath.Abs(filepath.Join("..", "..", "..", "protocol", "testdata", "golden"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"HEAPD_GOLDEN_DIR=" + golden}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEAPD_SOCKET=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, r.b.env...), r.env...)
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
		cmd.Dir = os.TempDir() // where every uid may be
	}
	return cmd
}

// interact runs prog with args like exec, and answers it: each line it
// prints is passed to answer, and a non-empty answer is written, with a
// newline, to its stdin.
func (r runner) interact(t *testing.T, prog string, answer func(line string) string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := r.command(ctx, t, prog, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		t.Fatalf("%s: %v", prog, err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if reply := answer(sc.Text()); reply != "" {
			if _, err := io.WriteString(stdin, reply+"\n"); err != nil {
				t.Errorf("%s: answering %q: %v", prog, sc.Text(), err)
			}
		}
	}
	err = cmd.Wait()
	return status(t, prog, args, out.String(), err)
}

// status turns a finished program's error into its exit status.
func status(t *testing.T, prog string, args []string, out string, err error) (string, int) {
	t.Helper()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &exit) && exit.Exited():
		return out, exit.ExitCode()
	}
	t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	return "", 0
}

// cases runs each named case of prog as a subtest. Exit status 77 is a
// skip: on the host for what only the VM tier has, a failure there.
func (r runner) cases(t *testing.T, prog string, names []string) {
	t.Helper()
	if len(names) == 0 {
		t.Fatalf("%s lists no such cases", prog)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			out, code := r.exec(t, prog, name)
			result(t, prog, name, out, code)
		})
	}
}

// result judges a case by its exit status.
func result(t *testing.T, prog, name, out string, code int) {
	t.Helper()
	switch code {
	case 0:
		t.Log(out)
	case 77:
		testutil.Missing(t, lastSkip(out))
	default:
		t.Errorf("%s %s: exit status %d\n%s", prog, name, code, out)
	}
}

func lastSkip(out string) string {
	msg := "skipped"
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "SKIP: "); ok {
			msg = s
		}
	}
	return msg
}

func as(uid uint32) *syscall.Credential {
	return &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
}

func socketEnv(d *daemontest.Daemon) string { return "HEAPD_SOCKET=" + d.Socket }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "running the C tests as other users needs root")
	}
}

// TestCClient runs every C test case, in every build, against the fake
// server and against the real heapd.
func TestCClient(t *testing.T) {
	for _, b := range builds(t) {
		t.Run(b.name, func(t *testing.T) {
			groups := cases(t, b.path("ctest-daemon"))
			fake := cases(t, b.path("ctest-fake"))

			t.Run("fake", func(t *testing.T) {
				runner{b: b}.cases(t, "ctest-fake", fake["fake"])
			})

			// One daemon for the cases that leave it running, checked to
			// be back at its baseline of fds once they are done: every
			// connection and buffer the C client had is released.
			t.Run("daemon", func(t *testing.T) {
				d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
				baseline := d.Baseline()
				self := runner{b: b, env: []string{socketEnv(d)}}
				self.cases(t, "ctest-daemon", groups["daemon"])
				t.Run("example", func(t *testing.T) { testExample(t, self) })
				t.Run("nobody", func(t *testing.T) {
					needRoot(t)
					runner{b: b, env: []string{socketEnv(d)}, cred: as(uidNobody)}.cases(t, "ctest-daemon", groups["nobody"])
				})
				t.Run("denied", func(t *testing.T) {
					needRoot(t)
					runner{b: b, env: []string{socketEnv(d)}, cred: as(uidNoRule)}.cases(t, "ctest-daemon", groups["denied"])
				})
				d.WaitFDs(t, baseline)
			})

			t.Run("quota", func(t *testing.T) {
				needRoot(t)
				d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
				runner{b: b, env: []string{socketEnv(d)}, cred: as(uidNobody)}.cases(t, "ctest-daemon", groups["quota"])
			})

			t.Run("busy", func(t *testing.T) {
				d := daemontest.Start(t, &daemontest.Options{Policy: policy(), Args: []string{"--max-connections-per-uid", "2"}})
				runner{b: b, env: []string{socketEnv(d)}}.cases(t, "ctest-daemon", groups["busy"])
			})

			t.Run("gone", func(t *testing.T) {
				for _, name := range groups["gone"] {
					d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
					r := runner{b: b, env: []string{socketEnv(d), "HEAPD_TEST_DAEMON_PID=" + strconv.Itoa(d.PID())}}
					r.cases(t, "ctest-daemon", []string{name})
					select {
					case <-d.Done():
					case <-time.After(10 * time.Second):
						t.Fatal("heapd still running after the test killed it")
					}
				}
			})

			// heapd crashes and a new one takes its socket: the C client
			// reconnects on its next call, and buffers from before stay
			// valid (issue 14).
			t.Run("restart", func(t *testing.T) {
				for _, name := range groups["restart"] {
					t.Run(name, func(t *testing.T) { testRestart(t, b, name) })
				}
			})

			t.Run("stopped", func(t *testing.T) {
				for _, name := range groups["stopped"] {
					d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
					r := runner{b: b, env: []string{socketEnv(d), "HEAPD_TEST_DAEMON_PID=" + strconv.Itoa(d.PID())}}
					r.cases(t, "ctest-daemon", []string{name})
					select {
					case <-d.Done():
						if err := d.Err(); err != nil {
							t.Errorf("heapd after SIGTERM: %v\n%s", err, d.Log())
						}
					case <-time.After(15 * time.Second):
						t.Fatal("heapd still running after SIGTERM")
					}
				}
			})
		})
	}
}

// testRestart runs the restart case name: when it prints "RESTART
// HEAPD", heapd is killed with SIGKILL and a new heapd started on the same
// socket (replacing the stale one the killed heapd left).
func testRestart(t *testing.T, b build, name string) {
	d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
	restarts := 0
	answer := func(line string) string {
		if line != "RESTART HEAPD" {
			return ""
		}
		restarts++
		d.Kill()
		daemontest.Start(t, &daemontest.Options{Socket: d.Socket, Policy: policy()})
		return "restarted"
	}
	out, code := runner{b: b, env: []string{socketEnv(d)}}.interact(t, "ctest-daemon", answer, name)
	result(t, "ctest-daemon", name, out, code)
	if restarts != 1 {
		t.Errorf("%s asked for %d restarts, want 1", name, restarts)
	}
}

// testExample runs heapd-alloc-example: it must allocate, map and fill an
// XRGB8888 image and print the layout the daemon chose.
func testExample(t *testing.T, r runner) {
	out, code := r.exec(t, "heapd-alloc-example", "100x20")
	t.Log(out)
	if code != 0 {
		t.Fatalf("heapd-alloc-example: exit status %d", code)
	}
	for _, want := range []string{"layout:   100x20 XR24, pitch 448, offset 0, modifier 0x0 (LINEAR)", "filled:   100x20 gradient"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if testutil.Required() && strings.Contains(out, "emulated") {
		t.Error("the example got emulated memory in the VM tier")
	}
}

// TestCLibrary checks what `make` ships: the shared library exports only
// heapd_* with the right soname, the header compiles alone in C99, C11
// and (where g++ is) C++, and the example builds against the installed
// library through pkg-config and runs. In the VM tier, where nothing is
// built, it checks that the packed programs are static.
func TestCLibrary(t *testing.T) {
	if testutil.Required() {
		for _, b := range builds(t) {
			for _, p := range programs {
				f, err := elf.Open(b.path(p))
				if err != nil {
					t.Fatal(err)
				}
				for _, prog := range f.Progs {
					if prog.Type == elf.PT_INTERP {
						t.Errorf("%s has an ELF interpreter: not a static build", p)
					}
				}
				f.Close()
			}
		}
		return
	}
	needTools(t)
	tmp := daemontest.TempDir(t)
	prefix := filepath.Join(tmp, "prefix")
	run(t, "", "make", "-s", "-C", "..", "CC=gcc", "O="+filepath.Join(tmp, "build"), "PREFIX="+prefix, "install")

	t.Run("exports", func(t *testing.T) {
		lib := filepath.Join(prefix, "lib", "libheapd-client.so")
		f, err := elf.Open(lib)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		soname, err := f.DynString(elf.DT_SONAME)
		if err != nil || len(soname) != 1 || soname[0] != "libheapd-client.so.1" {
			t.Errorf("soname %q (%v), want libheapd-client.so.1", soname, err)
		}
		syms, err := f.DynamicSymbols()
		if err != nil {
			t.Fatal(err)
		}
		var exported []string
		for _, s := range syms {
			if s.Section != elf.SHN_UNDEF && elf.ST_BIND(s.Info) == elf.STB_GLOBAL {
				exported = append(exported, s.Name)
				if !strings.HasPrefix(s.Name, "heapd_") {
					t.Errorf("exports %s: everything public is heapd_*", s.Name)
				}
			}
		}
		if len(exported) < 15 {
			t.Errorf("exports only %v", exported)
		}
	})

	t.Run("header", func(t *testing.T) {
		src := filepath.Join(tmp, "inc.c")
		if err := os.WriteFile(src, []byte("#include <heapd-client.h>\nint main(void) { return HEAPD_OK; }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		inc := "-I" + filepath.Join(prefix, "include")
		for _, std := range []string{"-std=c99", "-std=c11"} {
			run(t, "", "gcc", std, "-pedantic", "-Wall", "-Wextra", "-Werror", inc, "-fsyntax-only", src)
		}
		if _, err := exec.LookPath("g++"); err != nil {
			t.Log("g++ not found: the header's C++ guard is not compiled here")
			return
		}
		run(t, "", "g++", "-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", inc, "-fsyntax-only", src)
	})

	// The example docs/c-client.md shows, compiled and run as is.
	t.Run("doc-example", func(t *testing.T) {
		doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "c-client.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := strings.Cut(string(doc), "<!-- c-client-example")
		_, rest, ok2 := strings.Cut(rest, "```c\n")
		code, _, ok3 := strings.Cut(rest, "```")
		if !ok || !ok2 || !ok3 {
			t.Fatal("docs/c-client.md: no ```c block after <!-- c-client-example")
		}
		src := filepath.Join(tmp, "doc-example.c")
		if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(tmp, "doc-example")
		run(t, "", "gcc", "-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I"+filepath.Join(prefix, "include"),
			"-o", bin, src, filepath.Join(prefix, "lib", "libheapd-client.a"))
		d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
		ex := exec.Command(bin)
		ex.Env = append(os.Environ(), socketEnv(d))
		out, err := ex.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "pitch 7680, offset 0") {
			t.Errorf("the documented example: %v\n%s", err, out)
		}
		t.Logf("%s", out)
	})

	t.Run("pkg-config", func(t *testing.T) {
		pc, err := exec.LookPath("pkg-config")
		if err != nil {
			t.Skip("pkg-config not found (Debian: apt-get install pkg-config): the .pc file is not checked here")
		}
		cmd := exec.Command(pc, "--cflags", "--libs", "heapd-client")
		cmd.Env = append(os.Environ(), "PKG_CONFIG_PATH="+filepath.Join(prefix, "lib", "pkgconfig"))
		flags, err := cmd.Output()
		if err != nil {
			t.Fatalf("pkg-config heapd-client: %v", err)
		}
		example := filepath.Join(tmp, "example-shared")
		args := []string{"-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-o", example, filepath.Join("..", "heapd-alloc-example.c")}
		run(t, "", "gcc", append(args, strings.Fields(string(flags))...)...)
		d := daemontest.Start(t, &daemontest.Options{Policy: policy()})
		ex := exec.Command(example, "64x64")
		ex.Env = append(os.Environ(), socketEnv(d), "LD_LIBRARY_PATH="+filepath.Join(prefix, "lib"))
		out, err := ex.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "pitch 256") {
			t.Errorf("example linked with the shared library: %v\n%s", err, out)
		}
	})
}
