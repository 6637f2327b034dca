package heap

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/internal/testutil"
)

// The naming scheme over the captured /dev + /sys + /proc trees of each
// kernel era (dmaheap/testdata/trees): logical names must not change when
// the kernel renames its CMA heap.
func TestNamingAcrossKernelEras(t *testing.T) {
	for _, tc := range []struct {
		tree string
		want map[string]string // logical name -> target node (basename)
	}{
		{"linux-6.1", map[string]string{
			"system": "system", "contiguous": "reserved", "kernel/system": "system", "kernel/reserved": "reserved"}},
		{"linux-6.12", map[string]string{
			"system": "system", "contiguous": "reserved", "kernel/system": "system", "kernel/reserved": "reserved"}},
		{"linux-6.1-devicetree", map[string]string{
			"system": "system", "contiguous": "linux,cma", "kernel/system": "system", "kernel/linux,cma": "linux,cma"}},
		{"linux-6.17", map[string]string{
			"system": "system", "contiguous": "default_cma_region", "kernel/system": "system",
			"kernel/default_cma_region": "default_cma_region", "kernel/reserved": "reserved"}},
		{"linux-6.19", map[string]string{
			"system": "system", "contiguous": "default_cma_region", "kernel/system": "system",
			"kernel/default_cma_region": "default_cma_region", "kernel/linux,cma": "linux,cma",
			"kernel/ecc-free@b0000000": "ecc-free@b0000000"}},
		{"rpi4", map[string]string{
			"system": "system", "contiguous": "linux,cma", "kernel/system": "system",
			"kernel/linux,cma": "linux,cma", "kernel/vidbuf_cached": "vidbuf_cached"}},
		{"rpi5", map[string]string{
			"system": "system", "contiguous": "linux,cma", "kernel/system": "system",
			"kernel/linux,cma": "linux,cma", "kernel/vidbuf_cached": "vidbuf_cached"}},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			dir := t.TempDir()
			testutil.WriteTree(t, filepath.Join("..", "dmaheap", "testdata", "trees", tc.tree+".txtar"), dir)
			r, err := Open(&Config{Root: dir, AllowRegularNodes: true, NoUdmabuf: true, NoDRM: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := map[string]string{}
			for _, i := range r.List() {
				got[i.Name] = filepath.Base(i.Target)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("names (-want +got):\n%s\nproblems: %v", diff, r.Problems())
			}
		})
	}
}
