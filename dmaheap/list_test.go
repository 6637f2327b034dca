package dmaheap

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// listed is the part of an Info that a tree determines.
type listed struct {
	Name     string
	Node     bool
	AliasOf  string
	Dev      string
	Backing  Backing
	Problems []string // substrings, one per problem
}

func project(t *testing.T, infos []Info) []listed {
	t.Helper()
	var out []listed
	for _, in := range infos {
		l := listed{Name: in.Name, Node: in.Path != "", AliasOf: in.AliasOf, Backing: in.Backing}
		if in.Major != 0 || in.Minor != 0 {
			l.Dev = fmt.Sprintf("%d:%d", in.Major, in.Minor)
		}
		l.Problems = in.Problems
		out = append(out, l)
	}
	return out
}

func TestListTrees(t *testing.T) {
	for _, tc := range []struct {
		tree string
		want []listed
	}{
		{"linux-6.1", []listed{
			{Name: "reserved", Node: true, Dev: "254:1", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "254:0", Backing: BackingSystem},
		}},
		{"linux-6.12", []listed{
			{Name: "reserved", Node: true, Dev: "254:1", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "254:0", Backing: BackingSystem},
		}},
		{"linux-6.1-devicetree", []listed{
			{Name: "linux,cma", Node: true, Dev: "251:1", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "251:0", Backing: BackingSystem},
		}},
		{"linux-6.17", []listed{
			{Name: "default_cma_region", Node: true, Dev: "252:1", Backing: BackingCMA},
			{Name: "reserved", Node: true, Dev: "252:2", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "252:0", Backing: BackingSystem},
		}},
		{"linux-6.19", []listed{
			{Name: "default_cma_region", Node: true, Dev: "250:1", Backing: BackingCMA},
			{Name: "ecc-free@b0000000", Node: true, Dev: "250:3", Backing: BackingCMA},
			{Name: "linux,cma", Node: true, Dev: "250:2", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "250:0", Backing: BackingSystem},
		}},
		{"rpi4", []listed{
			{Name: "linux,cma", Node: true, Dev: "253:1", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "253:0", Backing: BackingSystem},
			{Name: "vidbuf_cached", Node: true, AliasOf: "linux,cma", Dev: "253:1", Backing: BackingCMA},
		}},
		{"rpi5", []listed{
			{Name: "linux,cma", Node: true, Dev: "253:1", Backing: BackingCMA},
			{Name: "system", Node: true, Dev: "253:0", Backing: BackingSystem},
			{Name: "vidbuf_cached", Node: true, AliasOf: "system", Dev: "253:0", Backing: BackingSystem},
		}},
		{"vendor", []listed{
			{Name: "camera", Node: true, Dev: "249:2", Backing: BackingCMA},
			{Name: "secure-video", Node: true, Dev: "249:1", Backing: BackingUnknown},
			{Name: "system", Node: true, Dev: "249:0", Backing: BackingSystem},
		}},
		{"broken", []listed{
			{Name: "ghost", Node: true, Dev: "252:7", Backing: BackingUnknown,
				Problems: []string{"has no"}},
			{Name: "nonode", Backing: BackingUnknown,
				Problems: []string{"does not exist: devtmpfs not mounted"}},
			{Name: "system", Node: true, Dev: "252:0", Backing: BackingSystem,
				Problems: []string{"is 252:0 but the kernel's heap \"system\" is 252:3: stale node"}},
			{Name: "vidbuf_cached", Node: true, AliasOf: "gone",
				Problems: []string{"no such file or directory", "points at no heap"}},
		}},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			cfg := loadTree(t, tc.tree)
			got, err := cfg.List()
			if err != nil {
				t.Fatal(err)
			}
			problems := cmp.Comparer(func(want, got []string) bool {
				if len(want) != len(got) {
					return false
				}
				for i := range want {
					if !strings.Contains(got[i], want[i]) && !strings.Contains(want[i], got[i]) {
						return false
					}
				}
				return true
			})
			if diff := cmp.Diff(tc.want, project(t, got), problems); diff != "" {
				t.Errorf("List (-want +got):\n%s", diff)
			}
			for _, in := range got {
				if in.Path == "" {
					continue
				}
				if in.Path != filepath.Join(cfg.DevDir, "dma_heap", in.Name) {
					t.Errorf("%s: Path = %q", in.Name, in.Path)
				}
				if in.BackingWhy == "" && in.AliasOf != "gone" {
					t.Errorf("%s: no BackingWhy", in.Name)
				}
				if fi, err := os.Stat(in.Path); err == nil {
					if in.Mode != fi.Mode() || in.UID != uint32(os.Getuid()) {
						t.Errorf("%s: Mode %v UID %d, want %v %d", in.Name, in.Mode, in.UID, fi.Mode(), os.Getuid())
					}
					if !in.Accessible {
						t.Errorf("%s: not Accessible", in.Name)
					}
				}
			}
		})
	}
}

func TestListWhy(t *testing.T) {
	for _, tc := range []struct {
		tree, heap, want string
	}{
		{"linux-6.1", "reserved", "booted with cma=64M"},
		{"linux-6.17", "default_cma_region", "stable name"},
		{"linux-6.19", "ecc-free@b0000000", "reusable shared-dma-pool"},
		{"vendor", "camera", "a CMA area named \"camera\" exists"},
		{"vendor", "secure-video", "vendor heap"},
		{"rpi5", "vidbuf_cached", "link to heap \"system\""},
		{"rpi4", "vidbuf_cached", "link to heap \"linux,cma\""},
	} {
		cfg := loadTree(t, tc.tree)
		heaps, err := cfg.List()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, h := range heaps {
			if h.Name == tc.heap {
				found = true
				if !strings.Contains(h.BackingWhy, tc.want) {
					t.Errorf("%s/%s: BackingWhy = %q, want it to contain %q", tc.tree, tc.heap, h.BackingWhy, tc.want)
				}
			}
		}
		if !found {
			t.Errorf("%s: no heap %q", tc.tree, tc.heap)
		}
	}
}

// A reserved-memory node that is not reusable (no-map) is not CMA.
func TestClassifyNoMapRegion(t *testing.T) {
	cfg := loadTree(t, "linux-6.19")
	if b, why := cfg.classify("framebuffer@be000000", ""); b != BackingUnknown {
		t.Errorf("no-map region classified %v (%s), want unknown", b, why)
	}
}

func TestListNoHeaps(t *testing.T) {
	cfg := treeConfig(t.TempDir())
	got, err := cfg.List()
	if err != nil || len(got) != 0 {
		t.Fatalf("List on an empty tree = %v, %v; want nothing, no error", got, err)
	}
}

// Without AllowRegularNodes a regular file is not a heap node.
func TestListRegularFileRejected(t *testing.T) {
	cfg := loadTree(t, "linux-6.1")
	cfg.AllowRegularNodes = false
	got, err := cfg.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range got {
		if len(in.Problems) != 1 || !strings.Contains(in.Problems[0], "not a character device") {
			t.Errorf("%s: Problems = %q, want one saying it is not a character device", in.Name, in.Problems)
		}
	}
}

func TestLinkHeap(t *testing.T) {
	cfg := &Config{DevDir: "/x/dev"}
	for target, want := range map[string]string{
		"linux,cma":                 "linux,cma",
		"./system":                  "system",
		"/x/dev/dma_heap/system":    "system",
		"/dev/dma_heap/system":      "system",
		"../null":                   "/x/dev/null",
		"/elsewhere/dma_heap/other": "/elsewhere/dma_heap/other",
	} {
		if got := cfg.linkHeap(target); got != want {
			t.Errorf("linkHeap(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestParseDevNum(t *testing.T) {
	for s, want := range map[string][3]uint32{
		"252:1":        {252, 1, 1},
		"0:0":          {0, 0, 1},
		"252":          {0, 0, 0},
		"a:1":          {0, 0, 0},
		"1:-1":         {0, 0, 0},
		"1:2:3":        {0, 0, 0},
		"":             {0, 0, 0},
		"4294967296:0": {0, 0, 0},
	} {
		ma, mi, ok := parseDevNum(s)
		if ok != (want[2] == 1) || ma != want[0] || mi != want[1] {
			t.Errorf("parseDevNum(%q) = %d, %d, %v; want %v", s, ma, mi, ok, want)
		}
	}
}
