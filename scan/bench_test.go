package scan

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
)

// The synthetic load of the benchmarks: child processes (copies of this
// test binary) holding fds between them. The issue's target is "a full
// scan costs at most 1.5× a bare walk" on 200 processes and 10,000 fds.
var (
	loadProcs    = flag.Int("scan.load-procs", 200, "benchmarks: child processes of the synthetic load")
	loadFDs      = flag.Int("scan.load-fds", 10000, "benchmarks: fds the children hold between them")
	loadMapEvery = flag.Int("scan.load-map-every", 10, "benchmarks: each child maps one in this many of its buffers (0: none)")
	loadHeap     = flag.String("scan.load-heap", "auto", "benchmarks: what the fds are: a DMA-BUF heap name, memfd, or auto (system when /dev/dma_heap/system opens, else memfd)")
)

// loadSpec is what one load child holds.
type loadSpec struct {
	FDs      int
	Heap     string // "" for memfds
	MapEvery int
}

// loadMain creates spec.FDs fds, maps some, says "ready" and holds them
// until stdin closes.
func loadMain(spec loadSpec) error {
	var heap *dmaheap.Heap
	if spec.Heap != "" {
		var err error
		if heap, err = dmaheap.Open(spec.Heap); err != nil {
			return err
		}
		defer heap.Close()
	}
	var closers []io.Closer
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}()
	pageSize := int64(os.Getpagesize())
	for i := range spec.FDs {
		mapIt := spec.MapEvery > 0 && i%spec.MapEvery == 0
		if heap != nil {
			b, err := heap.Alloc(pageSize)
			if err != nil {
				return err
			}
			closers = append(closers, b)
			if mapIt {
				m, err := b.Map(dmabuf.ProtRead)
				if err != nil {
					return err
				}
				closers = append(closers, m)
			}
			continue
		}
		fd, err := unix.MemfdCreate("scan-bench", unix.MFD_CLOEXEC)
		if err != nil {
			return os.NewSyscallError("memfd_create", err)
		}
		f := os.NewFile(uintptr(fd), "memfd")
		closers = append(closers, f)
		if err := f.Truncate(pageSize); err != nil {
			return err
		}
		if mapIt {
			data, err := unix.Mmap(fd, 0, int(pageSize), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return os.NewSyscallError("mmap", err)
			}
			defer unix.Munmap(data)
		}
	}
	if _, err := fmt.Println("ready"); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

// load is the running synthetic load.
type load struct {
	kind  string
	fds   int
	procs []*exec.Cmd
	stdin []io.WriteCloser
}

// benchmarking reports whether this run has benchmarks to run.
func benchmarking() bool {
	f := flag.Lookup("test.bench")
	return f != nil && f.Value.String() != ""
}

// runBenchmarks starts the load, runs the tests and benchmarks, and stops
// the load. It replaces testutil.Main for runs with -test.bench: the
// load's pipes and children live across the benchmarks, which the leak
// checks would take for leaks (the unit-test runs keep those checks).
func runBenchmarks(m *testing.M) int {
	l, err := startLoad(*loadProcs, *loadFDs, *loadHeap, *loadMapEvery)
	if err != nil {
		fmt.Fprintf(os.Stderr, "scan: benchmark load: %v\n", err)
		l.stop()
		return 1
	}
	fmt.Fprintf(os.Stderr, "scan: benchmark load: %d processes holding %d %s fds\n", len(l.procs), l.fds, l.kind)
	code := m.Run()
	if err := l.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "scan: benchmark load: %v\n", err)
		code = 1
	}
	return code
}

func startLoad(procs, fds int, heap string, mapEvery int) (*load, error) {
	l := &load{kind: "memfd"}
	if heap == "auto" {
		heap = "memfd"
		if h, err := dmaheap.Open("system"); err == nil {
			h.Close()
			heap = "system"
		}
	}
	if heap != "memfd" {
		l.kind = "DMA-BUF (" + heap + " heap)"
	} else {
		heap = ""
	}
	self, err := os.Executable()
	if err != nil {
		return l, err
	}
	for i := range procs {
		n := fds / procs
		if i < fds%procs {
			n++
		}
		job := fmt.Sprintf(`{"Load":{"FDs":%d,"Heap":%s,"MapEvery":%d}}`, n, strconv.Quote(heap), mapEvery)
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+job)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return l, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return l, err
		}
		if err := cmd.Start(); err != nil {
			return l, err
		}
		l.procs, l.stdin = append(l.procs, cmd), append(l.stdin, stdin)
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if line != "ready\n" {
			return l, fmt.Errorf("load child %d: %q, %v", cmd.Process.Pid, line, err)
		}
		l.fds += n
	}
	return l, nil
}

// stop closes every child's stdin and waits for them. Safe on a nil or
// partly started load.
func (l *load) stop() error {
	if l == nil {
		return nil
	}
	for _, w := range l.stdin {
		w.Close()
	}
	var first error
	for _, cmd := range l.procs {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && first == nil {
				first = fmt.Errorf("load child %d: %w", cmd.Process.Pid, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			if first == nil {
				first = fmt.Errorf("load child %d did not exit: killed", cmd.Process.Pid)
			}
		}
	}
	l.procs, l.stdin = nil, nil
	return first
}

// bareWalk opens and reads every /proc/<pid>/fdinfo/<fd> and nothing
// else, with the same reader the scan uses: the baseline of the speed
// target.
func bareWalk(procDir string) (files int, err error) {
	r, err := newProcReader(procDir)
	if err != nil {
		return 0, err
	}
	defer r.close()
	pids, err := r.pids()
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		dirFD, err := unix.Openat(r.procFD, strconv.Itoa(pid)+"/fdinfo", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		r.forEachEntry(dirFD, func(name []byte) {
			if _, err := r.readSmall(dirFD, string(name)); err == nil {
				files++
			}
		})
		unix.Close(dirFD)
	}
	return files, nil
}

// bareNsPerOp is BenchmarkBareWalk's result, for BenchmarkScan's ratio
// (benchmarks run in source order).
var bareNsPerOp float64

func BenchmarkBareWalk(b *testing.B) {
	files := 0
	for b.Loop() {
		n, err := bareWalk(DefaultProcDir)
		if err != nil {
			b.Fatal(err)
		}
		files = n
	}
	bareNsPerOp = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(float64(files), "fdinfo/op")
}

func BenchmarkScan(b *testing.B) {
	var s *Snapshot
	for b.Loop() {
		var err error
		if s, err = Scan(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(float64(len(s.Buffers)), "buffers/op")
	b.ReportMetric(float64(s.Stats.Processes), "procs/op")
	if bareNsPerOp > 0 {
		b.ReportMetric(ns/bareNsPerOp, "x-bare-walk")
	}
}

// BenchmarkScanVsBare alternates a bare walk and a full scan in every
// iteration and reports the median of the iterations' ratios: the
// measurement of the speed target least disturbed by a machine whose speed
// drifts (a shared host, a VM), which skews two separate benchmarks and
// even the ratio of their totals.
//
// It also times a scan without debugfs bufinfo (x-bare-nobufinfo), whose
// cost grows with every buffer of the system, held or not.
func BenchmarkScanVsBare(b *testing.B) {
	var bare, full, nobufinfo time.Duration
	var ratios, ratiosNoBufinfo []float64
	for b.Loop() {
		t0 := time.Now()
		if _, err := bareWalk(DefaultProcDir); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := Scan(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := Scan(context.Background(), &Config{NoBufinfo: true}); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		bare += t1.Sub(t0)
		full += t2.Sub(t1)
		nobufinfo += t3.Sub(t2)
		ratios = append(ratios, float64(t2.Sub(t1))/float64(t1.Sub(t0)))
		ratiosNoBufinfo = append(ratiosNoBufinfo, float64(t3.Sub(t2))/float64(t1.Sub(t0)))
	}
	b.ReportMetric(float64(bare.Nanoseconds())/float64(b.N), "bare-ns/op")
	b.ReportMetric(float64(full.Nanoseconds())/float64(b.N), "scan-ns/op")
	b.ReportMetric(median(ratios), "x-bare-walk")
	b.ReportMetric(median(ratiosNoBufinfo), "x-bare-nobufinfo")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// BenchmarkScanParts times the parts a full scan adds to the bare walk,
// to see which one costs what on a given kernel: reading every
// /proc/<pid>/maps, and reading and parsing debugfs bufinfo.
func BenchmarkScanParts(b *testing.B) {
	b.Run("maps", func(b *testing.B) {
		r, err := newProcReader(DefaultProcDir)
		if err != nil {
			b.Fatal(err)
		}
		defer r.close()
		for b.Loop() {
			pids, err := r.pids()
			if err != nil {
				b.Fatal(err)
			}
			for _, pid := range pids {
				_, _ = r.readAll(r.procFD, strconv.Itoa(pid)+"/maps")
			}
		}
	})
	b.Run("bufinfo-read", func(b *testing.B) {
		path := (*Config)(nil).bufinfoPath()
		if _, err := os.Stat(path); err != nil {
			b.Skip(err)
		}
		for b.Loop() {
			if _, err := os.ReadFile(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bufinfo", func(b *testing.B) {
		path := (*Config)(nil).bufinfoPath()
		if _, err := os.Stat(path); err != nil {
			b.Skip(err)
		}
		n := 0
		for b.Loop() {
			data, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			bi, err := ParseBufinfo(data)
			if err != nil {
				b.Fatal(err)
			}
			n = len(bi.Buffers)
		}
		b.ReportMetric(float64(n), "buffers/op")
	})
}

// The baseline reads this process's fdinfo files at least.
func TestBareWalkSelf(t *testing.T) {
	n, err := bareWalk(DefaultProcDir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("bare walk read %d fdinfo files; this process alone has 3", n)
	}
}
