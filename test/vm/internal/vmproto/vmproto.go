// Package vmproto is what the VM tier's host runner (test/vm/cmd/vmrunner)
// and the guest's /init (test/vm/cmd/vminit) agree on: the run
// configuration the runner packs into the initramfs, and the status lines
// /init prints on the serial console for the runner to parse.
//
// Status lines look like
//
//	VMINIT: RESULT status=PASS pkg=github.com/heapd/heapd/dmabuf passed=12 failed=0 skips=0 exit=0 time=1.2s
//	VMINIT: DONE status=PASS binaries=1 passed=1 failed=0 skips=0 tests=12
//	VMINIT: EXIT status=0
//
// The runner finds them anywhere in a console line, because kernel
// messages can land in the middle of one.
package vmproto

import (
	"fmt"
	"strconv"
	"strings"
)

// ConfigPath is where the runner puts the JSON-encoded Config in the
// initramfs.
const ConfigPath = "/etc/heapd-vm.json"

// ModulesDir is the directory of the kernel modules in the guest, one
// subdirectory per kernel release (`uname -r`).
const ModulesDir = "/lib/modules"

// Environment variables /init sets for everything it runs.
const (
	EnvVM      = "HEAPD_VM"         // "1" inside the VM
	EnvKernel  = "HEAPD_VM_KERNEL"  // the kernel's label, e.g. "6.1" (the runner puts it on the kernel command line, which hands it to /init)
	EnvModules = "HEAPD_VM_MODULES" // directory of this kernel's .ko files

	// EnvRequireDevices turns "device missing" skips into failures; it is
	// internal/testutil.RequireEnv (not imported: that package imports
	// testing, which does not belong in /init).
	EnvRequireDevices = "HEAPD_REQUIRE_DEVICES"
)

// Modes.
const (
	ModeTest = "test" // run every test binary
	ModeRun  = "run"  // run Argv and report its exit status
)

// Config tells /init what to do.
type Config struct {
	Mode string // ModeTest or ModeRun

	// Modules are loaded in this order (each after its dependencies).
	Modules []Module

	Tests       []Test   // ModeTest: binaries to run, in order
	TestArgs    []string // ModeTest: extra arguments for every binary (-test.run …)
	TestTimeout string   // ModeTest: -test.timeout for each binary

	Argv      []string // ModeRun: the command line, no shell
	StdoutTTY string   // ModeRun: where the command's stdout goes (a raw serial port)

	Env []string // extra KEY=VALUE for everything /init starts
}

// Module is a kernel module to load at boot.
type Module struct {
	Name string // module name, file Name+".ko" (with - or _)
	// Params are name=value pairs; ones the module does not declare (an
	// older kernel) are dropped with a note.
	Params []string
	// DRM: wait until a DRM card of this device name shows up.
	DRM bool
}

// Test is one test binary in the initramfs.
type Test struct {
	Pkg    string // import path
	Binary string // absolute path in the guest
	Dir    string // working directory (the package dir, with its testdata)
}

// Status words.
const (
	Pass = "PASS"
	Fail = "FAIL"
)

// Marker starts every status line.
const Marker = "VMINIT: "

// Result is the outcome of one test binary.
type Result struct {
	Status string
	Pkg    string
	Passed int // --- PASS lines (tests and subtests)
	Failed int // --- FAIL lines
	Skips  int // --- SKIP lines
	Exit   int // exit status; -1 when it died of a signal or did not start
	Time   string
}

// String formats r as a status line (without the Marker).
func (r Result) String() string {
	return fmt.Sprintf("RESULT status=%s pkg=%s passed=%d failed=%d skips=%d exit=%d time=%s",
		r.Status, r.Pkg, r.Passed, r.Failed, r.Skips, r.Exit, r.Time)
}

// Done is the summary /init prints after the last binary.
type Done struct {
	Status   string
	Binaries int
	Passed   int // binaries that passed
	Failed   int // binaries that failed
	Skips    int // skipped tests over all binaries
	Tests    int // tests and subtests that passed over all binaries
}

// String formats d as a status line (without the Marker).
func (d Done) String() string {
	return fmt.Sprintf("DONE status=%s binaries=%d passed=%d failed=%d skips=%d tests=%d",
		d.Status, d.Binaries, d.Passed, d.Failed, d.Skips, d.Tests)
}

// Line is a parsed status line.
type Line struct {
	Kind   string // RESULT, DONE, EXIT, ERROR, …
	Fields map[string]string
	Text   string // everything after the kind (for ERROR and notes)
}

// Parse finds a status line in s. ok is false when s has none.
func Parse(s string) (l Line, ok bool) {
	i := strings.Index(s, Marker)
	if i < 0 {
		return Line{}, false
	}
	rest := strings.TrimRight(s[i+len(Marker):], "\r\n")
	kind, text, _ := strings.Cut(rest, " ")
	l = Line{Kind: kind, Text: text, Fields: map[string]string{}}
	for _, f := range strings.Fields(text) {
		if k, v, ok := strings.Cut(f, "="); ok {
			l.Fields[k] = v
		}
	}
	return l, kind != ""
}

// Int returns field k as an int (0 when absent or malformed).
func (l Line) Int(k string) int {
	n, _ := strconv.Atoi(l.Fields[k])
	return n
}

// Result converts a RESULT line.
func (l Line) Result() Result {
	return Result{
		Status: l.Fields["status"], Pkg: l.Fields["pkg"],
		Passed: l.Int("passed"), Failed: l.Int("failed"), Skips: l.Int("skips"),
		Exit: l.Int("exit"), Time: l.Fields["time"],
	}
}

// Done converts a DONE line.
func (l Line) Done() Done {
	return Done{
		Status: l.Fields["status"], Binaries: l.Int("binaries"),
		Passed: l.Int("passed"), Failed: l.Int("failed"),
		Skips: l.Int("skips"), Tests: l.Int("tests"),
	}
}
