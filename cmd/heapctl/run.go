package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// globals are the flags every subcommand shares.
type globals struct {
	output  string
	verbose bool
	root    string // test hook: prefix for /dev, /sys, /proc
	stdout  io.Writer
	stderr  io.Writer
}

func (g *globals) logger() *slog.Logger {
	if !g.verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// emit writes v as JSON when -o json, else calls table.
func (g *globals) emit(v any, table func(w io.Writer) error) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table", "":
		return table(g.stdout)
	}
	return fmt.Errorf("unknown output format %q: use -o table or -o json", g.output)
}

// buildVersion is stamped at link time by `make dist`
// (-X main.buildVersion=...); empty in plain builds.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "heapctl",
		Short: "List DMA-BUF heaps, allocate and verify buffers",
		Long: `heapctl shows the DMA-BUF heaps this system offers under heapd's stable
names (system, contiguous, kernel/<name>, ...) and allocates from them.

Where no kernel heap and no udmabuf exist, the "system" heap is the emulated
heap: sealed memfds, CPU only, not importable by any device.`,
		Example: `  heapctl heaps                            # every heap: backend, contiguous, CMA free/total
  heapctl alloc --heap system --size 8MiB  # allocate, map, fill and verify
  heapctl status                           # is heapd there, and who it sees you as
  heapctl top --once -o json               # who holds which DMA-BUF
  heapctl heaps -o json                    # any command: -o json for scripts`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(singleDashFormat(args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log discovery decisions to stderr")
	root.PersistentFlags().StringVar(&g.root, "root", "", "prefix for /dev, /sys and /proc (testing over captured trees)")
	_ = root.PersistentFlags().MarkHidden("root")
	root.AddCommand(heapsCmd(g), allocCmd(g), statusCmd(g), devicesCmd(g), resolveCmd(g))
	root.AddCommand(ledgerCmd(g), topCmd(g), demoCmd(g))
	root.AddCommand(benchCmd(g))
	return root.ExecuteContext(ctx)
}
