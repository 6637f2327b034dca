package scan

import (
	"flag"
	"os"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

var captureFlag = flag.Bool("scan.capture", false,
	"print a txtar archive of fdinfo, maps and bufinfo of known buffers and exit (run it in the VM tier: see capture)")

func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	flag.Parse()
	if *captureFlag {
		os.Exit(capture(os.Stdout))
	}
	if benchmarking() {
		os.Exit(runBenchmarks(m))
	}
	testutil.Main(m)
}
