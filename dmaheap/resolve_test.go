package dmaheap

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolveCMATrees(t *testing.T) {
	for _, tc := range []struct {
		tree    string
		want    string            // chosen heap; "" for none
		why     string            // substring of Why
		aliases []string          // links to the chosen heap
		passed  map[string]string // name -> substring of why it was passed over
	}{
		{
			tree: "linux-6.1", want: "reserved", why: "no default_cma_region on this kernel",
			passed: map[string]string{"system": "not physically contiguous"},
		},
		{
			tree: "linux-6.12", want: "reserved", why: "booted with cma=64M",
			passed: map[string]string{"system": "not physically contiguous"},
		},
		{
			tree: "linux-6.1-devicetree", want: "linux,cma", why: "default CMA area",
			passed: map[string]string{"system": "not physically contiguous"},
		},
		{
			tree: "linux-6.17", want: "default_cma_region", why: "stable name",
			passed: map[string]string{
				"reserved": "same default CMA area",
				"system":   "not physically contiguous",
			},
		},
		{
			tree: "linux-6.19", want: "default_cma_region", why: "stable name",
			passed: map[string]string{
				"ecc-free@b0000000": "separate CMA region",
				"linux,cma":         "same default CMA area",
				"system":            "not physically contiguous",
			},
		},
		{
			tree: "rpi4", want: "linux,cma", aliases: []string{"vidbuf_cached"},
			passed: map[string]string{
				"system":        "not physically contiguous",
				"vidbuf_cached": "the resolver names the heap itself",
			},
		},
		{
			tree: "rpi5", want: "linux,cma",
			passed: map[string]string{
				"system":        "not physically contiguous",
				"vidbuf_cached": "a link to \"system\", which is not physically contiguous",
			},
		},
		{
			tree: "vendor", want: "camera", why: "no heap for the default CMA area",
			passed: map[string]string{
				"secure-video": "backing unknown",
				"system":       "not physically contiguous",
			},
		},
		{
			tree: "broken",
			passed: map[string]string{
				"ghost":         "backing unknown",
				"nonode":        "no node",
				"system":        "not physically contiguous",
				"vidbuf_cached": "backing is unknown",
			},
		},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			heaps, err := loadTree(t, tc.tree).List()
			if err != nil {
				t.Fatal(err)
			}
			r, err := ResolveCMA(heaps)
			if tc.want == "" {
				if !errors.Is(err, ErrNotExist) {
					t.Fatalf("ResolveCMA = %v, %v; want ErrNotExist", r.Heap.Name, err)
				}
				if !strings.Contains(err.Error(), "CONFIG_DMABUF_HEAPS_CMA") {
					t.Errorf("error does not name the kernel option: %v", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if r.Heap.Name != tc.want || r.Heap.Alias() {
					t.Errorf("chose %q, want %q\n%s", r.Heap.Name, tc.want, r)
				}
				if !strings.Contains(r.Why, tc.why) {
					t.Errorf("Why = %q, want it to contain %q", r.Why, tc.why)
				}
				if diff := cmp.Diff(tc.aliases, r.Aliases); diff != "" {
					t.Errorf("Aliases (-want +got):\n%s", diff)
				}
			}
			got := map[string]string{}
			for _, p := range r.PassedOver {
				got[p.Name] = p.Why
			}
			if len(got) != len(r.PassedOver) {
				t.Errorf("a heap passed over twice: %v", r.PassedOver)
			}
			for name, want := range tc.passed {
				if !strings.Contains(got[name], want) {
					t.Errorf("passed over %q: %q, want it to contain %q", name, got[name], want)
				}
			}
			if len(got) != len(tc.passed) {
				t.Errorf("passed over %d heaps, want %d:\n%s", len(got), len(tc.passed), r)
			}
			if s := r.String(); !strings.Contains(s, tc.want) {
				t.Errorf("String() does not name the choice:\n%s", s)
			}
		})
	}
}

// Among the names of the default area, one this process may open wins.
func TestResolveCMAPrefersAccessible(t *testing.T) {
	heaps := []Info{
		{Name: "default_cma_region", Path: "/dev/dma_heap/default_cma_region", Backing: BackingCMA, Owner: "root", Group: "root"},
		{Name: "ecc-free@b0000000", Path: "/dev/dma_heap/ecc-free@b0000000", Backing: BackingCMA, Accessible: true},
		{Name: "linux,cma", Path: "/dev/dma_heap/linux,cma", Backing: BackingCMA, Accessible: true},
	}
	r, err := ResolveCMA(heaps)
	if err != nil {
		t.Fatal(err)
	}
	if r.Heap.Name != "linux,cma" || !strings.Contains(r.Why, "may open only this one") {
		t.Errorf("chose %q (%s), want linux,cma for access", r.Heap.Name, r.Why)
	}

	// A per-region heap is a different area: access does not make it win.
	heaps[2].Accessible = false
	r, err = ResolveCMA(heaps)
	if err != nil {
		t.Fatal(err)
	}
	if r.Heap.Name != "default_cma_region" || !strings.Contains(r.Why, "may not open") {
		t.Errorf("chose %q (%s), want default_cma_region with a warning", r.Heap.Name, r.Why)
	}
}

func TestResolveCMAEmpty(t *testing.T) {
	r, err := ResolveCMA(nil)
	if !errors.Is(err, ErrNotExist) || r.Heap.Name != "" {
		t.Fatalf("ResolveCMA(nil) = %v, %v", r, err)
	}
	if s := r.String(); !strings.Contains(s, "no CMA heap") {
		t.Errorf("String() = %q", s)
	}
}
