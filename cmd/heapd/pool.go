package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/metrics"
	"github.com/heapd/heapd/internal/pool"
	"github.com/heapd/heapd/internal/units"
)

// poolFlags are the prefetch pool's flags (docs/performance.md).
type poolFlags struct {
	bytes, sizes, heaps, cmaReserve *string
	depth                           *int
}

func addPoolFlags(fs *flag.FlagSet) *poolFlags {
	return &poolFlags{
		bytes:      fs.String("pool-bytes", "0", "prefetch pool: most `bytes` held in pre-faulted, never handed-out buffers (0: no pool)"),
		sizes:      fs.String("pool-sizes", "4KiB,1MiB,8MiB", "prefetch pool: size `classes`, comma-separated; only requests of exactly these sizes are served from it"),
		depth:      fs.Int("pool-depth", pool.DefaultDepth, "prefetch pool: buffers kept per heap and size class"),
		heaps:      fs.String("pool-heaps", "", "prefetch pool: `heaps` to pool, comma-separated (default: every non-contiguous heap; a contiguous heap only when named)"),
		cmaReserve: fs.String("pool-cma-reserve", "64MiB", "prefetch pool: drain a contiguous heap's pool while its CmaFree is below this many `bytes`"),
	}
}

// config parses the flags; a nil Config means the pool is off.
func (f *poolFlags) config() (*pool.Config, error) {
	maxBytes, err := units.ParseSize(*f.bytes)
	if err != nil {
		return nil, fmt.Errorf("--pool-bytes: %w", err)
	}
	if maxBytes == 0 {
		return nil, nil
	}
	if *f.depth <= 0 {
		return nil, fmt.Errorf("--pool-depth %d: must be at least 1", *f.depth)
	}
	cfg := &pool.Config{MaxBytes: maxBytes, Depth: *f.depth}
	for _, s := range strings.Split(*f.sizes, ",") {
		n, err := units.ParseSize(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--pool-sizes %q: want sizes like 4KiB,1MiB,8MiB", *f.sizes)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	for _, h := range strings.Split(*f.heaps, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.Heaps = append(cfg.Heaps, h)
		}
	}
	if cfg.CMAReserve, err = units.ParseSize(*f.cmaReserve); err != nil {
		return nil, fmt.Errorf("--pool-cma-reserve: %w", err)
	}
	return cfg, nil
}

// wrap returns reg itself when the pool is off, else a pool over it; stop
// closes the pool.
func (f *poolFlags) wrap(reg *heap.Registry, met *metrics.Metrics, log *slog.Logger) (daemon.Heaps, func(), error) {
	cfg, err := f.config()
	if err != nil || cfg == nil {
		return reg, func() {}, err
	}
	cfg.Metrics, cfg.Logger = met, log
	p, err := pool.New(reg, cfg)
	if err != nil {
		return nil, nil, err
	}
	log.Info("prefetch pool on", "bytes", cfg.MaxBytes, "sizes", cfg.Sizes, "depth", cfg.Depth, "heaps", *f.heaps)
	return p, func() { p.Close() }, nil
}
