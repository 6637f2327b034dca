package main

import (
	"strings"
	"testing"

	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

func TestVerdict(t *testing.T) {
	a := arches["x86_64"]
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
		t.Run(tc.name, func(t *testing.T) {
			ok, reasons := tc.res.verdict(a, []string{"a", "b"})
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
