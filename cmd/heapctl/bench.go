package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/units"
)

// Bench modes: what one timed operation is.
const (
	// modeFloor is a bare request/reply over a SOCK_SEQPACKET socket pair
	// passing one fd: the least any broker can cost.
	modeFloor = "floor"
	// modeDirect allocates through the library in this process.
	modeDirect = "direct"
	// modeBroker allocates through heapd.
	modeBroker = "broker"
	// modeBrokerBatch asks heapd for --batch buffers in one request;
	// modeDirectBatch allocates as many through the library.
	modeBrokerBatch = "broker-batch"
	modeDirectBatch = "direct-batch"
)

// benchConfig is what one bench run measures.
type benchConfig struct {
	heaps       []string
	sizes       []int64
	concurrency []int
	duration    time.Duration
	iterations  int // per case; 0: as many as fit in duration
	pause       time.Duration
	batch       int
	touch       bool
}

// benchCase is the measurement of one (mode, heap, size, concurrency).
type benchCase struct {
	Mode        string  `json:"mode"`
	Heap        string  `json:"heap,omitempty"`
	Size        int64   `json:"size,omitempty"`
	Batch       int     `json:"batch,omitempty"`
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	P50         int64   `json:"p50_ns"`
	P90         int64   `json:"p90_ns"`
	P99         int64   `json:"p99_ns"`
	Max         int64   `json:"max_ns"`
	Mean        int64   `json:"mean_ns"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	BytesPerSec float64 `json:"bytes_per_sec,omitempty"`
}

// benchRatio compares broker and direct for one (heap, size, concurrency),
// all measured in the same run.
type benchRatio struct {
	Heap        string `json:"heap"`
	Size        int64  `json:"size"`
	Batch       int    `json:"batch,omitempty"`
	Concurrency int    `json:"concurrency"`
	// BrokerDirect is broker p50 / direct p50 latency.
	BrokerDirect float64 `json:"broker_over_direct"`
	// OverheadFloor is (broker p50 − direct p50) / floor p50 at the same
	// concurrency: heapd's own cost in units of the IPC floor.
	OverheadFloor float64 `json:"overhead_over_floor"`
	// Throughput is broker ops/s ÷ direct ops/s.
	Throughput float64 `json:"throughput_broker_over_direct"`
}

// benchOutput is `heapctl bench -o json`.
type benchOutput struct {
	Daemon    string        `json:"daemon"`
	GOMAXPROC int           `json:"gomaxprocs"`
	Touch     bool          `json:"pages_touched"`
	Pause     time.Duration `json:"pause_ns,omitempty"`
	Cases     []benchCase   `json:"cases"`
	Ratios    []benchRatio  `json:"ratios"`
	// Skipped lists the cases left out because they would hold more
	// memory at once than the machine (or the CMA area) has free.
	Skipped []string `json:"skipped,omitempty"`
}

func benchCmd(g *globals) *cobra.Command {
	var (
		heaps, sizes []string
		conc         []int
		format       string
		cfg          benchConfig
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure allocation latency and throughput through heapd, directly, and the IPC floor, in one run",
		Long: `bench measures, side by side in one run, for every heap, size and
concurrency asked for:

  floor   a bare request/reply over a SOCK_SEQPACKET socket pair passing one
          fd (the least any broker can cost), at the same concurrency;
  direct  allocating through the heapd library in this process (needs access
          to the heap devices, as heapd has);
  broker  allocating through heapd ($HEAPD_SOCKET, or /run/heapd/socket), one
          connection per concurrent client;
  batch   (with --batch N) one heapd request for N buffers, against N direct
          allocations.

Each operation maps the buffer and writes one byte per page (as a real user
would; --touch=false to skip), then closes it; latency covers the allocation
and the touch, not the close. It reports p50/p90/p99/max latency, aggregate
throughput, and the ratios broker/direct and (broker-direct)/floor.
A case that would hold more than half of the free memory at once (clients ×
buffers × size against MemAvailable, or CmaFree for a contiguous heap) is
skipped and listed as such.
Output: a table, -o json, or -format=gobench (benchstat reads it).
A progress bar is drawn on stderr when it is a terminal.`,
		Example: `  heapctl bench
  heapctl bench --heap system --size 1MiB --concurrency 1,8,64 --time 2s
  heapctl bench -format=gobench > new.txt && benchstat old.txt new.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.heaps = heaps
			for _, s := range sizes {
				n, err := units.ParseSize(s)
				if err != nil || n <= 0 {
					return fmt.Errorf("--size %q: want a size such as 4KiB or 8MiB", s)
				}
				cfg.sizes = append(cfg.sizes, n)
			}
			for _, c := range conc {
				if c < 1 || c > 64 {
					return fmt.Errorf("--concurrency %d: must be 1..64 clients", c)
				}
			}
			cfg.concurrency = conc
			if len(cfg.heaps) == 0 || len(cfg.sizes) == 0 || len(cfg.concurrency) == 0 {
				return errors.New("--heap, --size and --concurrency need at least one value each")
			}
			if cfg.duration <= 0 && cfg.iterations <= 0 {
				return errors.New("give a positive --time or --iterations")
			}
			if cfg.batch < 0 || cfg.batch == 1 {
				return fmt.Errorf("--batch %d: want 0 (no batch case) or 2..16", cfg.batch)
			}
			switch format {
			case "", "table", "json", "gobench":
			default:
				return fmt.Errorf("-format %q: want gobench (or use -o table / -o json)", format)
			}
			out, err := runBench(cmd.Context(), g, cfg)
			if err != nil {
				return err
			}
			if format == "gobench" {
				return writeGobench(g.stdout, out)
			}
			if format == "json" {
				g.output = "json"
			}
			return g.emit(out, func(w io.Writer) error { return benchTable(w, out) })
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&heaps, "heap", []string{"system"}, "heaps to measure, comma-separated (see heapctl heaps)")
	f.StringSliceVar(&sizes, "size", []string{"4KiB", "1MiB", "8MiB", "32MiB"}, "buffer sizes, comma-separated")
	f.IntSliceVar(&conc, "concurrency", []int{1, 8, 64}, "concurrent clients (1..64), comma-separated: one case each")
	f.DurationVar(&cfg.duration, "time", time.Second, "how long to run each case")
	f.IntVar(&cfg.iterations, "iterations", 0, "operations per client and case (0: as many as fit in --time)")
	f.DurationVar(&cfg.pause, "pause", 0, "pause between one client's operations (not timed): lets heapd's prefetch pool refill")
	f.IntVar(&cfg.batch, "batch", 4, "also measure one request for this many buffers (0: no batch case)")
	f.BoolVar(&cfg.touch, "touch", true, "map each buffer and write one byte per page")
	f.StringVar(&format, "format", "", "gobench: Go benchmark lines for benchstat (overrides -o)")
	return cmd
}

// singleDashFormat rewrites Go-flag style "-format=gobench" (as the issue
// and benchstat users write it) to "--format=gobench", which pflag takes.
func singleDashFormat(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "-format" || strings.HasPrefix(a, "-format=") {
			a = "-" + a
		}
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		out[i] = a
	}
	return out
}

// runBench runs every case and computes the ratios.
func runBench(ctx context.Context, g *globals, cfg benchConfig) (*benchOutput, error) {
	probe := &client.Client{}
	cctx, cancel := context.WithTimeout(ctx, dialTimeout)
	info, err := probe.Info(cctx)
	cancel()
	probe.Close()
	if err != nil {
		return nil, fmt.Errorf("bench measures heapd against the library, and heapd at %s did not answer: %w (start heapd, or set %s)", probe.SocketPath(), err, client.EnvSocket)
	}
	if cfg.batch > info.MaxBatch {
		return nil, fmt.Errorf("--batch %d: this heapd allows at most %d buffers per request", cfg.batch, info.MaxBatch)
	}
	reg, err := g.openRegistry()
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	for _, h := range cfg.heaps {
		if _, err := reg.Get(h); err != nil {
			return nil, fmt.Errorf("--heap %s: %w (the direct path needs the heap here too; see heapctl heaps)", h, err)
		}
	}
	out := &benchOutput{Daemon: info.Version, GOMAXPROC: runtime.GOMAXPROCS(0), Touch: cfg.touch, Pause: cfg.pause}
	total := len(cfg.concurrency) * (1 + 2*len(cfg.heaps)*len(cfg.sizes))
	if cfg.batch > 1 {
		total += 2 * len(cfg.heaps) * len(cfg.sizes)
	}
	bar := newProgress(g.stderr, total)
	defer bar.finish()
	run := func(c benchCase, op func(ctx context.Context, worker int) (func() error, error), setup func(n int) (func(), error)) error {
		bar.step(c)
		res, err := measure(ctx, cfg, c, op, setup)
		if err != nil {
			return fmt.Errorf("%s %s %s x%d: %w", c.Mode, c.Heap, units.FormatSize(c.Size), c.Concurrency, err)
		}
		out.Cases = append(out.Cases, res)
		return nil
	}
	// A case holds clients × buffers × size at once; leave out those that
	// would take more than half of what is free (MemAvailable, or CmaFree
	// for a contiguous heap), rather than push the machine into the OOM
	// killer or the CMA area into failure.
	fits := func(h string, size int64, n, count int) bool {
		need := int64(n) * int64(count) * size
		free := memAvailable()
		if hp, err := reg.Get(h); err == nil && hp.Info().Contiguous && hp.Info().CMATotal > 0 {
			free = hp.Info().CMAFree
		}
		if free > 0 && need > free/2 {
			out.Skipped = append(out.Skipped, fmt.Sprintf("%s %d×%s ×%d clients: needs %s at once, more than half of the %s free",
				h, count, units.FormatSize(size), n, units.FormatSize(need), units.FormatSize(free)))
			return false
		}
		return true
	}
	for _, n := range cfg.concurrency {
		fl := &floor{}
		if err := run(benchCase{Mode: modeFloor, Concurrency: n}, fl.op, fl.setup); err != nil {
			fl.close()
			return nil, err
		}
		fl.close()
		for _, h := range cfg.heaps {
			for _, size := range cfg.sizes {
				if !fits(h, size, n, 1) {
					continue
				}
				d := &directOps{reg: reg, heap: h, size: size, touch: cfg.touch, count: 1}
				if err := run(benchCase{Mode: modeDirect, Heap: h, Size: size, Concurrency: n}, d.op, nil); err != nil {
					return nil, err
				}
				b := &brokerOps{heap: h, size: size, touch: cfg.touch, count: 1}
				err := run(benchCase{Mode: modeBroker, Heap: h, Size: size, Concurrency: n}, b.op, b.setup)
				b.close()
				if err != nil {
					return nil, err
				}
				if cfg.batch > 1 && fits(h, size, n, cfg.batch) {
					d := &directOps{reg: reg, heap: h, size: size, touch: cfg.touch, count: cfg.batch}
					if err := run(benchCase{Mode: modeDirectBatch, Heap: h, Size: size, Batch: cfg.batch, Concurrency: n}, d.op, nil); err != nil {
						return nil, err
					}
					b := &brokerOps{heap: h, size: size, touch: cfg.touch, count: cfg.batch}
					err := run(benchCase{Mode: modeBrokerBatch, Heap: h, Size: size, Batch: cfg.batch, Concurrency: n}, b.op, b.setup)
					b.close()
					if err != nil {
						return nil, err
					}
				}
			}
		}
	}
	out.Ratios = ratios(out.Cases)
	return out, nil
}

// ratios pairs each broker case with its direct case and the floor.
func ratios(cases []benchCase) []benchRatio {
	find := func(mode, h string, size int64, n int) *benchCase {
		for i := range cases {
			c := &cases[i]
			if c.Mode == mode && c.Heap == h && c.Size == size && c.Concurrency == n {
				return c
			}
		}
		return nil
	}
	var out []benchRatio
	for _, b := range cases {
		var direct string
		switch b.Mode {
		case modeBroker:
			direct = modeDirect
		case modeBrokerBatch:
			direct = modeDirectBatch
		default:
			continue
		}
		d := find(direct, b.Heap, b.Size, b.Concurrency)
		fl := find(modeFloor, "", 0, b.Concurrency)
		if d == nil || fl == nil || d.P50 == 0 || fl.P50 == 0 || d.OpsPerSec == 0 {
			continue
		}
		out = append(out, benchRatio{
			Heap: b.Heap, Size: b.Size, Batch: b.Batch, Concurrency: b.Concurrency,
			BrokerDirect:  float64(b.P50) / float64(d.P50),
			OverheadFloor: float64(b.P50-d.P50) / float64(fl.P50),
			Throughput:    b.OpsPerSec / d.OpsPerSec,
		})
	}
	return out
}

// measure runs c.Concurrency workers, each doing op until the case's time
// or iteration budget is spent, after one untimed warm-up operation each.
// op returns the untimed cleanup of the operation (closing buffers).
func measure(ctx context.Context, cfg benchConfig, c benchCase, op func(ctx context.Context, worker int) (func() error, error), setup func(n int) (func(), error)) (benchCase, error) {
	if setup != nil {
		undo, err := setup(c.Concurrency)
		if err != nil {
			return c, err
		}
		defer undo()
	}
	var (
		mu    sync.Mutex
		lats  []time.Duration
		first error
		wg    sync.WaitGroup
	)
	// Warm up every worker (connections, page tables, the pool) untimed.
	for w := range c.Concurrency {
		done, err := op(ctx, w)
		if err != nil {
			return c, err
		}
		if err := done(); err != nil {
			return c, err
		}
	}
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for w := range c.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 64)
			for i := 0; ; i++ {
				if cfg.iterations > 0 && i >= cfg.iterations || cfg.iterations == 0 && i > 0 && time.Now().After(deadline) || ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				done, err := op(ctx, w)
				lat := time.Since(t0)
				if err == nil {
					err = done()
				}
				if err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					break
				}
				local = append(local, lat)
				if cfg.pause > 0 {
					time.Sleep(cfg.pause)
				}
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return c, first
	}
	if err := ctx.Err(); err != nil {
		return c, err
	}
	slices.Sort(lats)
	c.Ops = len(lats)
	if c.Ops == 0 {
		return c, errors.New("no operation completed")
	}
	pct := func(p float64) int64 { return int64(lats[min(len(lats)-1, int(p*float64(len(lats))))]) }
	c.P50, c.P90, c.P99, c.Max = pct(0.50), pct(0.90), pct(0.99), int64(lats[len(lats)-1])
	var sum time.Duration
	for _, l := range lats {
		sum += l
	}
	c.Mean = int64(sum) / int64(c.Ops)
	busy := elapsed - time.Duration(c.Ops/c.Concurrency)*cfg.pause
	if busy <= 0 {
		busy = elapsed
	}
	if busy > 0 { // a coarse clock can measure 0: no rate then, not +Inf (JSON cannot carry it)
		c.OpsPerSec = float64(c.Ops) / busy.Seconds()
	}
	n := max(c.Batch, 1)
	c.BytesPerSec = c.OpsPerSec * float64(c.Size) * float64(n)
	return c, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// memAvailable returns MemAvailable from /proc/meminfo, or 0 when it
// cannot be read (no limit then).
func memAvailable() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// touch maps b and writes one byte per page, as a user filling it would
// (first touches are where memory the kernel has not zeroed yet is
// zeroed).
func touch(b *dmabuf.Buffer) error { return b.FillPages(0xa5) }

func closeAll(bufs []*dmabuf.Buffer) func() error {
	return func() error {
		var errs []error
		for _, b := range bufs {
			errs = append(errs, b.Close())
		}
		return errors.Join(errs...)
	}
}

// directOps allocates count buffers through the library.
type directOps struct {
	reg   *heap.Registry
	heap  string
	size  int64
	touch bool
	count int
}

func (d *directOps) op(ctx context.Context, _ int) (func() error, error) {
	bufs := make([]*dmabuf.Buffer, 0, d.count)
	for range d.count {
		b, err := d.reg.Alloc(ctx, d.heap, d.size, heap.AllocOptions{Name: "heapctl-bench"})
		if err != nil {
			closeAll(bufs)()
			return nil, err
		}
		bufs = append(bufs, b)
		if d.touch {
			if err := touch(b); err != nil {
				closeAll(bufs)()
				return nil, err
			}
		}
	}
	return closeAll(bufs), nil
}

// brokerOps allocates count buffers in one heapd request, one connection
// per worker.
type brokerOps struct {
	heap    string
	size    int64
	touch   bool
	count   int
	clients []*client.Client
}

func (b *brokerOps) setup(n int) (func(), error) {
	b.clients = make([]*client.Client, n)
	for i := range b.clients {
		b.clients[i] = &client.Client{}
	}
	return func() {}, nil
}

func (b *brokerOps) close() {
	for _, c := range b.clients {
		c.Close()
	}
	b.clients = nil
}

func (b *brokerOps) op(ctx context.Context, w int) (func() error, error) {
	a, err := b.clients[w].Allocate(ctx, client.Request{Heap: b.heap, Size: b.size, Count: b.count, Label: "heapctl-bench"})
	if err != nil {
		return nil, err
	}
	if b.touch {
		for _, buf := range a.Buffers {
			if err := touch(buf); err != nil {
				a.Close()
				return nil, err
			}
		}
	}
	return a.Close, nil
}

// benchTable prints the cases and the ratios.
func benchTable(w io.Writer, out *benchOutput) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\theap\tsize\tclients\tops\tp50\tp90\tp99\tmax\tops/s\t\n")
	for _, c := range out.Cases {
		size, h := "-", "-"
		if c.Size > 0 {
			size = units.FormatSize(c.Size)
			if c.Batch > 1 {
				size = fmt.Sprintf("%d×%s", c.Batch, size)
			}
			h = c.Heap
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%.0f\t\n", c.Mode, h, size, c.Concurrency, c.Ops,
			fmtDur(c.P50), fmtDur(c.P90), fmtDur(c.P99), fmtDur(c.Max), c.OpsPerSec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nratios (p50 latency; throughput at the same concurrency; floor at the same concurrency):\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "heap\tsize\tclients\tbroker/direct\toverhead/floor\tthroughput broker/direct\t\n")
	for _, r := range out.Ratios {
		size := units.FormatSize(r.Size)
		if r.Batch > 1 {
			size = fmt.Sprintf("%d×%s", r.Batch, size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t\n", r.Heap, size, r.Concurrency, r.BrokerDirect, r.OverheadFloor, r.Throughput)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, sk := range out.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", sk)
	}
	touched := "pages touched"
	if !out.Touch {
		touched = "pages not touched"
	}
	_, err := fmt.Fprintf(w, "\n%s, %s, GOMAXPROCS=%d; overhead = broker − direct.\n", out.Daemon, touched, out.GOMAXPROC)
	return err
}

func fmtDur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return d.Round(time.Millisecond).String()
}

// writeGobench writes one Go benchmark line per case, which benchstat
// reads: ns/op is the mean latency, with p50/p90/p99/max and MB/s as
// extra units.
func writeGobench(w io.Writer, out *benchOutput) error {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: heapctl/bench\n", runtime.GOOS, runtime.GOARCH)
	if out.Daemon != "" {
		fmt.Fprintf(w, "daemon: %s\n", strings.ReplaceAll(out.Daemon, "\n", " "))
	}
	for _, c := range out.Cases {
		name := "BenchmarkAlloc/mode=" + c.Mode
		if c.Size > 0 {
			name += "/heap=" + strings.NewReplacer("/", "_", " ", "_").Replace(c.Heap) + "/size=" + strings.ReplaceAll(units.FormatSize(c.Size), " ", "")
			if c.Batch > 1 {
				name += "/batch=" + strconv.Itoa(c.Batch)
			}
		}
		name += fmt.Sprintf("/clients=%d-%d", c.Concurrency, out.GOMAXPROC)
		fmt.Fprintf(w, "%s\t%d\t%d ns/op\t%d p50-ns\t%d p90-ns\t%d p99-ns\t%d max-ns", name, c.Ops, c.Mean, c.P50, c.P90, c.P99, c.Max)
		if c.BytesPerSec > 0 {
			fmt.Fprintf(w, "\t%.2f MB/s", c.BytesPerSec/1e6)
		}
		if _, err := fmt.Fprintln(w); err != nil {
			return err
		}
	}
	return nil
}

// progress draws a one-line progress bar on stderr when it is a terminal.
type progress struct {
	w      io.Writer
	n, i   int
	active bool
}

func newProgress(w io.Writer, n int) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, n: n, active: ok && isTerminal(f)}
}

func (p *progress) step(c benchCase) {
	if !p.active {
		return
	}
	p.i++
	const width = 30
	done := width * (p.i - 1) / p.n
	what := c.Mode
	if c.Size > 0 {
		what += " " + c.Heap + " " + units.FormatSize(c.Size)
	}
	fmt.Fprintf(p.w, "\r\x1b[K[%s%s] %d/%d %s ×%d", strings.Repeat("=", done), strings.Repeat(" ", width-done), p.i, p.n, what, c.Concurrency)
}

func (p *progress) finish() {
	if p.active {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
