package main

import (
	"strings"
	"testing"
)

// Bad pool flags stop heapd before it listens, naming the flag.
func TestPoolFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool-bytes", "lots"}, "--pool-bytes"},
		{[]string{"--pool-bytes", "64MiB", "--pool-sizes", "4KiB,,1MiB"}, "--pool-sizes"},
		{[]string{"--pool-bytes", "64MiB", "--pool-sizes", "-1"}, "--pool-sizes"},
		{[]string{"--pool-bytes", "64MiB", "--pool-depth", "0"}, "--pool-depth"},
		{[]string{"--pool-bytes", "64MiB", "--pool-cma-reserve", "x"}, "--pool-cma-reserve"},
	} {
		out, err := heapd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("heapd %v: err %v, want one naming %s\n%s", tc.args, err, tc.want, out)
		}
	}
	f := &poolFlags{bytes: new(string), sizes: new(string), heaps: new(string), cmaReserve: new(string), depth: new(int)}
	*f.bytes, *f.sizes, *f.heaps, *f.cmaReserve, *f.depth = "0", "4KiB", "", "64MiB", 4
	if cfg, err := f.config(); err != nil || cfg != nil {
		t.Errorf("--pool-bytes 0: %+v, %v; want no pool", cfg, err)
	}
	*f.bytes, *f.sizes, *f.heaps = "32MiB", "4KiB, 8MiB", "system, contiguous"
	cfg, err := f.config()
	if err != nil || cfg.MaxBytes != 32<<20 || len(cfg.Sizes) != 2 || cfg.Sizes[1] != 8<<20 || len(cfg.Heaps) != 2 || cfg.Heaps[1] != "contiguous" {
		t.Errorf("config %+v, %v", cfg, err)
	}
}
