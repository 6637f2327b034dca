package main

import (
	"strings"
	"testing"

	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

func TestVerdict(t *testing.T) {
	pass := func(pkg string) vmproto.Result { return vmproto.Result{Status: vmproto.Pass, Pkg: pkg} }
	done := func(status string) *vmproto.Done { return &vmproto.Done{Status: status} }
	for _, tc := range []struct {
		name string
		res  vmResult
		want string // "" for a pass, else a substring of the reasons
	}{
		{"all pass", vmResult{results: []vmproto.Result{pass("a"), pass("b")}, done: done(vmproto.Pass), qemuStatus: 1}, ""},
		{"one failed", vmResult{results: []vmproto.Result{pass("a"), {Status: vmproto.Fail, Pkg: "b"}}, done: done(vmproto.Fail), qemuStatus: 3}, "b failed"},
		{"hung", vmResult{results: []vmproto.Result{pass("a")}, timedOut: true}, "hung"},
		{"died mid-run", vmResult{results: []vmproto.Result{pass("a")}, qemuStatus: 0}, "b: no result"},
		{"no hand-off", vmResult{results: []vmproto.Result{pass("a"), pass("b")}, done: done(vmproto.Pass), qemuStatus: 0}, "QEMU exited with status 0"},
		{"setup error", vmResult{results: []vmproto.Result{pass("a"), pass("b")}, done: done(vmproto.Fail), errors: []string{"finit_module vkms: ENOENT"}, qemuStatus: 3}, "finit_module"},
	} {
		for _, name := range archNames() {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				ok, reasons := tc.res.verdict(arches[name], []string{"a", "b"})
				got := strings.Join(reasons, "; ")
				switch {
				case tc.want == "" && !ok:
					t.Errorf("verdict = fail (%s), want pass", got)
				case tc.want != "" && ok:
					t.Errorf("verdict = pass, want fail with %q", tc.want)
				case tc.want != "" && !strings.Contains(got, tc.want):
					t.Errorf("reasons %q do not mention %q", got, tc.want)
				}
			})
		}
	}
}

// Every architecture must be bootable as described: a QEMU, a kernel
// architecture build-kernel.sh knows, and a way to carry stdout and status.
func TestArches(t *testing.T) {
	kernelArches := map[string]bool{"x86_64": true, "arm64": true, "arm": true}
	for _, name := range archNames() {
		a := arches[name]
		if a.name != name {
			t.Errorf("arches[%q].name = %q", name, a.name)
		}
		if !kernelArches[a.kernelArch] {
			t.Errorf("%s: kernel architecture %q is not one build-kernel.sh builds", name, a.kernelArch)
		}
		if a.qemu == "" || a.qemuPkg == "" || a.image == "" || a.console == "" || a.stdoutTTY == "" || len(a.stdoutArgs) == 0 {
			t.Errorf("%s: incomplete: %+v", name, a)
		}
		if a.goarch == "arm" && a.goarm == "" {
			t.Errorf("%s: goarch arm without GOARM", name)
		}
		if a.passStatus == a.failStatus || a.passStatus == 0 || a.failStatus == 0 {
			t.Errorf("%s: pass %d / fail %d statuses must differ from each other and from 0 (a dead guest)", name, a.passStatus, a.failStatus)
		}
	}
	for alias, name := range archAliases {
		if lookupArch(alias) != arches[name] {
			t.Errorf("alias %s does not find %s", alias, name)
		}
	}
}
