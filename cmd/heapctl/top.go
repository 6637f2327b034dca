package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/scan"
)

// topView is one of top's three views.
type topView int

const (
	viewProcesses topView = iota
	viewBuffers
	viewHeaps
)

func (v topView) String() string {
	switch v {
	case viewBuffers:
		return "buffers"
	case viewHeaps:
		return "heaps"
	}
	return "processes"
}

// parseView accepts a view's name or its key (p, b, h).
func parseView(s string) (topView, error) {
	switch s {
	case "p", "processes", "process", "":
		return viewProcesses, nil
	case "b", "buffers", "buffer":
		return viewBuffers, nil
	case "h", "heaps", "heap":
		return viewHeaps, nil
	}
	return 0, fmt.Errorf("unknown view %q: use processes (p), buffers (b) or heaps (h)", s)
}

type topOptions struct {
	once       bool
	view       string
	interval   time.Duration
	iterations int
	noDebugFS  bool
}

// topOutput is what `top --once -o json` prints: the whole snapshot (all
// three views) and the notes on what it could not see.
type topOutput struct {
	*scan.Snapshot
	Notes []string `json:"notes,omitempty"`
}

func topCmd(g *globals) *cobra.Command {
	var o topOptions
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show who holds which DMA-BUF: per process, per buffer, per heap",
		Long: `top scans every process's fdinfo and maps for DMA-BUFs and shows who holds
them, largest first, refreshing every --interval. Keys: p processes, b
buffers, h heaps, space rescans now, q quits.

A buffer shared by several processes counts in full in each one's BYTES and
split evenly in their SHARE. Run as root to see every process (others are
counted as unreadable) and, with debugfs mounted, the devices each buffer is
attached to and the buffers only the kernel holds.

When stdout is not a terminal, top prints one table per interval (-n of
them, 0 for no end) instead of a live view. --once prints one table, or with
-o json every view with the scan's statistics.`,
		Example: `  heapctl top
  heapctl top --view heaps
  heapctl top --once -o json
  heapctl top --once --view buffers`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			view, err := parseView(o.view)
			if err != nil {
				return err
			}
			if o.interval <= 0 {
				return fmt.Errorf("--interval %v: must be positive", o.interval)
			}
			if g.output != "table" && g.output != "" && g.output != "json" {
				return fmt.Errorf("unknown output format %q: use -o table or -o json", g.output)
			}
			scanner := g.topScanner(o)
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if o.once {
				s, err := scanner(ctx)
				if err != nil {
					return err
				}
				out := topOutput{Snapshot: s, Notes: s.Notes()}
				return g.emit(out, func(w io.Writer) error { return writeTop(w, s, view, 0, 0) })
			}
			if g.output == "json" {
				return errors.New("-o json needs --once (the live view is for people)")
			}
			in, _ := cmd.InOrStdin().(*os.File)
			out, _ := g.stdout.(*os.File)
			if out != nil && isTerminal(out) {
				return liveTop(ctx, in, out, scanner, view, o.interval)
			}
			return batchTop(ctx, g.stdout, scanner, view, o.interval, o.iterations)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.once, "once", false, "scan once, print and exit (with -o json: every view)")
	f.StringVar(&o.view, "view", "processes", "view to show first: processes (p), buffers (b) or heaps (h)")
	f.DurationVarP(&o.interval, "interval", "d", 2*time.Second, "time between scans")
	f.IntVarP(&o.iterations, "iterations", "n", 0, "when stdout is not a terminal: tables to print before exiting (0: until interrupted)")
	f.BoolVar(&o.noDebugFS, "no-debugfs", false, "do not read debugfs dma_buf/bufinfo (attached devices, kernel-only buffers)")
	return cmd
}

// topScanner returns the scan top runs, over g.root when set.
func (g *globals) topScanner(o topOptions) func(context.Context) (*scan.Snapshot, error) {
	cfg := &scan.Config{NoBufinfo: o.noDebugFS, Ledger: topLedger(g)}
	if g.root != "" {
		cfg.ProcDir = filepath.Join(g.root, "proc")
		cfg.SysDir = filepath.Join(g.root, "sys")
		cfg.DevDir = filepath.Join(g.root, "dev")
		cfg.DebugFSDir = filepath.Join(g.root, "sys", "kernel", "debug")
	}
	cfg.Logger = g.logger()
	return func(ctx context.Context) (*scan.Snapshot, error) { return scan.Scan(ctx, cfg) }
}

// topLedger returns heapd's ledger, which fills the OWNER column, or nil.
//
// HOOK (issue 10): return the heapd client here once its package exists.
// It must implement scan.Ledger: Owners(ctx) returns the owner of every
// buffer heapd handed out, keyed by the buffer's inode (what
// dmabuf.Buffer.Stat reports as Info.Inode), so the daemon's ledger has to
// record that inode when it commits an allocation. A daemon that is not
// running should give an error from Owners: top shows it as a problem line
// and goes on without owners.
func topLedger(g *globals) scan.Ledger { return nil }

// batchTop prints one table per interval: top for pipes and logs.
func batchTop(ctx context.Context, w io.Writer, scanner func(context.Context) (*scan.Snapshot, error), view topView, interval time.Duration, iterations int) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; iterations == 0 || i < iterations; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			fmt.Fprintln(w)
		}
		s, err := scanner(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s  %s\n", s.Time.Format(time.DateTime), summary(s))
		if err := writeTop(w, s, view, 0, 0); err != nil {
			return err
		}
	}
	return nil
}
