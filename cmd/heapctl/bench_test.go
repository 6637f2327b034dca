package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/internal/units"
)

// startBenchHeapd starts a real heapd with the prefetch pool on for the
// given sizes and metrics on a unix socket, points HEAPD_SOCKET at it and
// returns a function that reads one counter from its metrics.
func startBenchHeapd(t *testing.T, poolHeaps, poolSizes string, extra ...string) (*daemontest.Daemon, func(name string) float64) {
	t.Helper()
	dir := daemontest.TempDir(t)
	metricsSock := filepath.Join(dir, "metrics")
	args := []string{"--pool-bytes", "64MiB", "--pool-sizes", poolSizes, "--pool-depth", "4", "--metrics-listen", "unix:" + metricsSock}
	if poolHeaps != "" {
		args = append(args, "--pool-heaps", poolHeaps)
	}
	args = append(args, extra...)
	d := daemontest.Start(t, &daemontest.Options{Args: args})
	t.Setenv(client.EnvSocket, d.Socket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", metricsSock)
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	counter := func(name string) float64 {
		t.Helper()
		resp, err := hc.Get("http://heapd/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, line := range strings.Split(string(body), "\n") {
			if f := strings.Fields(line); len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
				v, err := strconv.ParseFloat(f[1], 64)
				if err != nil {
					t.Fatalf("metrics line %q: %v", line, err)
				}
				sum += v
			}
		}
		return sum
	}
	return d, counter
}

func checkBenchJSON(t *testing.T, out string, heaps []string, sizes []int64, conc []int, iterations, batch int) benchOutput {
	t.Helper()
	var got benchOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	// bench leaves out, and lists, the cases that would hold more than
	// half the free memory or CMA (a small CMA area on the arm guest).
	want := len(conc) * (1 + len(heaps)*len(sizes)*4)
	// (a skipped case can take its batch counterpart with it: at most two
	// cases per entry)
	if n := len(got.Cases); n > want || n+2*len(got.Skipped) < want || (len(got.Skipped) == 0 && n != want) {
		t.Fatalf("%d cases and %d skipped, want %d (floor, and direct, broker and both batch modes per heap and size, per concurrency)\n%s", len(got.Cases), len(got.Skipped), want, out)
	}
	for _, c := range got.Cases {
		if c.Ops != c.Concurrency*iterations {
			t.Errorf("%+v: %d ops, want %d clients × %d iterations", c, c.Ops, c.Concurrency, iterations)
		}
		if !(0 < c.P50 && c.P50 <= c.P90 && c.P90 <= c.P99 && c.P99 <= c.Max && c.Mean <= c.Max && c.OpsPerSec > 0) {
			t.Errorf("%+v: percentiles out of order or zero", c)
		}
		if (c.Mode == modeBrokerBatch || c.Mode == modeDirectBatch) != (c.Batch == batch) {
			t.Errorf("%+v: batch %d", c, c.Batch)
		}
	}
	if n := len(conc) * len(heaps) * len(sizes) * 2; len(got.Ratios) != n && (len(got.Skipped) == 0 || len(got.Ratios) > n) {
		t.Errorf("%d ratios, want %d (fewer only when cases were skipped: %d)", len(got.Ratios), n, len(got.Skipped))
	}
	for _, r := range got.Ratios {
		if r.BrokerDirect <= 0 || r.Throughput <= 0 {
			t.Errorf("ratio %+v", r)
		}
	}
	if !got.Touch {
		t.Error("pages_touched false by default")
	}
	return got
}

// TestBench runs heapctl bench against a heapd it starts (emulated heap on
// the host, the real system heap in the VM), in every output format, and
// checks through heapd's metrics that the prefetch pool served requests.
func TestBench(t *testing.T) {
	testutil.CheckFDs(t)
	_, counter := startBenchHeapd(t, "", "4KiB,1MiB")
	args := []string{"bench", "--heap", "system", "--size", "4KiB,1MiB", "--concurrency", "1,2", "--iterations", "2", "--batch", "2", "--pause", "20ms"}
	out, err := heapctl(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkBenchJSON(t, out, []string{"system"}, []int64{4 << 10, 1 << 20}, []int{1, 2}, 2, 2)
	if hits := counter("heapd_pool_hits_total"); hits == 0 {
		t.Errorf("heapd_pool_hits_total = 0: the pool served nothing")
	}
	if misses := counter("heapd_pool_misses_total"); misses < 0 {
		t.Errorf("heapd_pool_misses_total = %v", misses)
	}

	out, err = heapctl(t, append(args, "-format=gobench")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	line := regexp.MustCompile(`^Benchmark\S+-\d+\t\d+\t\d+ ns/op\t\d+ p50-ns\t\d+ p90-ns\t\d+ p99-ns\t\d+ max-ns(\t[0-9.]+ MB/s)?$`)
	header := regexp.MustCompile(`^[a-z]+: .+$`)
	var benches int
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case line.MatchString(l):
			benches++
		case header.MatchString(l):
		default:
			t.Errorf("gobench line benchstat would not read: %q", l)
		}
	}
	if benches != 2*(1+2*4) {
		t.Errorf("%d benchmark lines, want 18:\n%s", benches, out)
	}

	out, err = heapctl(t, append(args, "--iterations", "1")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"floor", "direct", "broker-batch", "broker/direct", "overhead/floor", "pages touched"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress bar drawn on a non-terminal:\n%q", out)
	}
}

// A case that cannot fit in memory is skipped and said so, not tried.
func TestBenchSkipsWhatCannotFit(t *testing.T) {
	testutil.CheckFDs(t)
	startBenchHeapd(t, "", "4KiB")
	out, err := heapctl(t, "bench", "--size", "4KiB,1024TiB", "--concurrency", "1", "--iterations", "2", "--batch", "0", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got benchOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Cases) != 3 || len(got.Skipped) != 1 || !strings.Contains(got.Skipped[0], "1024 TiB") || len(got.Ratios) != 1 {
		t.Errorf("cases %d (want floor, direct and broker at 4 KiB), skipped %q (want the 1024 TiB case), ratios %d", len(got.Cases), got.Skipped, len(got.Ratios))
	}
}

func TestBenchBadInput(t *testing.T) {
	t.Setenv(client.EnvSocket, filepath.Join(t.TempDir(), "none"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--concurrency", "65"}, "1..64"},
		{[]string{"--concurrency", "0"}, "1..64"},
		{[]string{"--size", "lots"}, "--size"},
		{[]string{"--batch", "1"}, "--batch"},
		{[]string{"--time", "0s"}, "--iterations"},
		{[]string{"-format=csv"}, "gobench"},
		{nil, client.EnvSocket}, // no heapd
	} {
		out, err := heapctl(t, append([]string{"bench"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench %v: err %v, want one mentioning %q\n%s", tc.args, err, tc.want, out)
		}
	}
}

func TestSingleDashFormat(t *testing.T) {
	got := fmt.Sprint(singleDashFormat([]string{"bench", "-format=gobench", "-format", "x", "--", "-format"}))
	if want := "[bench --format=gobench --format x -- -format]"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestIntegrationBench runs heapctl bench on the real kernel heaps, with
// heapd's prefetch pool on for system and contiguous (when there is one),
// and logs the tables (docs/performance.md quotes them). Contiguous runs
// smaller sizes: the VM's CMA area is 64 MiB.
func TestIntegrationBench(t *testing.T) {
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.NeedRoot(t)
	testutil.CheckFDs(t)
	runs := []struct {
		heap  string
		sizes string
	}{{"system", "4KiB,1MiB,8MiB"}}
	if hs, err := heapctl(t, "heaps"); err == nil && strings.Contains(hs, "contiguous") {
		runs = append(runs, struct{ heap, sizes string }{"contiguous", "4KiB,1MiB"})
	}
	// A few iterations at 1 and 2 clients prove bench works on every
	// architecture's guest and keep the VM tier short (it runs on five
	// guests; 32-bit arm under QEMU's TCG is about three times slower than
	// the others). The VM numbers in docs/performance.md were taken with
	// --iterations 20 --concurrency 1,4.
	iterations := 5
	if runtime.GOARCH == "arm" {
		iterations = 3
	}
	_, counter := startBenchHeapd(t, "system,contiguous", "4KiB,1MiB,8MiB", "--pool-depth", "2", "--pool-cma-reserve", "24MiB")
	for _, r := range runs {
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		args := []string{"bench", "--heap", r.heap, "--size", r.sizes, "--concurrency", "1,2", "--iterations", strconv.Itoa(iterations), "--batch", "4", "--pause", "30ms", "-o", "json"}
		err := run(ctx, args, &out, &errb)
		cancel()
		if err != nil {
			t.Fatalf("%v\n%s%s", err, out.String(), errb.String())
		}
		var sizes []int64
		for _, s := range strings.Split(r.sizes, ",") {
			n, _ := units.ParseSize(s)
			sizes = append(sizes, n)
		}
		got := checkBenchJSON(t, out.String(), []string{r.heap}, sizes, []int{1, 2}, iterations, 4)
		var table bytes.Buffer
		if err := benchTable(&table, &got); err != nil {
			t.Fatal(err)
		}
		t.Logf("heapctl %s\n%s", strings.Join(args[:len(args)-2], " "), table.String())
	}
	hits, misses := counter("heapd_pool_hits_total"), counter("heapd_pool_misses_total")
	t.Logf("pool: %v hits, %v misses", hits, misses)
	if hits == 0 {
		t.Error("heapd_pool_hits_total = 0: the pool served nothing on real heaps")
	}
}

// TestIntegrationBenchPoolWarm measures 8 MiB allocations on the real
// system heap with heapd's pool warm (a pause between allocations lets it
// refill) against the direct path, in one run, and logs the table
// (docs/performance.md quotes it). It checks that the pool served, not
// how fast: speed targets belong to benchmarks, not tests.
func TestIntegrationBenchPoolWarm(t *testing.T) {
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.NeedRoot(t)
	testutil.CheckFDs(t)
	_, counter := startBenchHeapd(t, "system", "8MiB", "--pool-depth", "2")
	for _, touch := range []string{"--touch=true", "--touch=false"} {
		var out, errb bytes.Buffer
		args := []string{"bench", "--heap", "system", "--size", "8MiB", "--concurrency", "1", "--iterations", "6", "--batch", "0", "--pause", "300ms", touch}
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%v\n%s%s", err, out.String(), errb.String())
		}
		t.Logf("heapctl %s\n%s", strings.Join(args, " "), out.String())
	}
	hits, misses := counter("heapd_pool_hits_total"), counter("heapd_pool_misses_total")
	t.Logf("pool: %v hits, %v misses", hits, misses)
	if hits == 0 {
		t.Error("heapd_pool_hits_total = 0: the warm pool served nothing")
	}
}
