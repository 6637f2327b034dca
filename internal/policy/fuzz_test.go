package policy

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse: any bytes give a policy or an ErrSyntax, never a panic; a
// policy that parses formats, and keeps its invariants.
func FuzzParse(f *testing.F) {
	f.Add(DefaultText())
	f.Add([]byte(testPolicy))
	if b, err := os.ReadFile("../../contrib/heapd.toml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("[[rule]]\nname = \"a\"\nuid = [0]\nheaps = [\"*\"]\n[rule.quota]\nbytes = \"1MiB\"\n"))
	f.Add([]byte("[ledger]\nrelease_interval = \"250ms\"\n"))
	f.Add([]byte("[[rule]]\nname = \"a\"\nheaps = []\nrate = \"5/250ms\"\nmax_alloc = 4096\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, &ParseOptions{Source: "fuzz.toml", Lookup: names})
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error not wrapping ErrSyntax: %v", err)
			}
			if !strings.HasPrefix(err.Error(), ErrSyntax.Error()+": fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var b strings.Builder
		if err := p.Format(&b); err != nil {
			t.Fatal(err)
		}
		for i, r := range p.Rules {
			if r.Index != i+1 || r.Name == "" || r.Heaps == nil || r.MaxAlloc == 0 {
				t.Fatalf("rule %d: %+v", i, r)
			}
			if r.Rate != nil && (r.Rate.N <= 0 || r.Rate.Per <= 0) {
				t.Fatalf("rate %+v", r.Rate)
			}
		}
		if p.ReleaseInterval <= 0 || p.SessionCache <= 0 || p.LogindTimeout <= 0 {
			t.Fatalf("settings %+v", p)
		}
	})
}

// FuzzGlob: the matcher never panics and agrees with a literal compare
// for patterns without wildcards.
func FuzzGlob(f *testing.F) {
	f.Add("scanout*", "scanout/platform-vc4")
	f.Add("a*b?c", "aXXbYc")
	f.Fuzz(func(t *testing.T, pat, name string) {
		got := globMatch(pat, name)
		if !strings.ContainsAny(pat, "*?") && got != (pat == name) {
			t.Fatalf("%q ~ %q = %v", pat, name, got)
		}
		if pat == "*" && !got {
			t.Fatal("* must match everything")
		}
	})
}
