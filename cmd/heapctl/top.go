package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon"
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
	// Processes replaces the snapshot's: each with its heapd owners.
	Processes []topProcess `json:"processes"`
	Notes     []string     `json:"notes,omitempty"`
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
				out := topOutput{Snapshot: s, Processes: topProcesses(s), Notes: s.Notes()}
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
	cfg := &scan.Config{NoBufinfo: o.noDebugFS}
	if g.root != "" {
		cfg.ProcDir = filepath.Join(g.root, "proc")
		cfg.SysDir = filepath.Join(g.root, "sys")
		cfg.DevDir = filepath.Join(g.root, "dev")
		cfg.DebugFSDir = filepath.Join(g.root, "sys", "kernel", "debug")
	}
	cfg.Logger = g.logger()
	return func(ctx context.Context) (*scan.Snapshot, error) {
		// Asked at every scan: heapd may start or stop while top runs.
		c := *cfg
		c.Ledger = topLedger(g)
		return scan.Scan(ctx, &c)
	}
}

// ledgerTimeout bounds top's question to heapd, so that a stuck daemon
// costs a problem line, not a frozen view.
const ledgerTimeout = 5 * time.Second

// topLedger returns heapd's ledger, which fills the OWNER columns: the
// live buffers heapd's admin socket (the socket of $HEAPD_SOCKET or
// /run/heapd/socket, plus ".admin") lists, keyed by inode. It returns nil
// when that socket does not exist (no heapd here: no owners, and nothing
// to report); a heapd that exists but does not answer, or refuses (the
// admin socket serves root and heapd's own user only), becomes a problem
// line of the scan.
func topLedger(g *globals) scan.Ledger {
	admin := (&client.Client{}).SocketPath() + daemon.AdminSuffix
	if _, err := os.Stat(admin); errors.Is(err, fs.ErrNotExist) {
		g.logger().Debug("no heapd admin socket: no owners", "path", admin)
		return nil
	}
	return scan.LedgerFunc(func(ctx context.Context) (map[uint64]scan.Owner, error) {
		ctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
		defer cancel()
		es, err := fetchLedger(ctx, admin)
		if err != nil {
			return nil, err
		}
		return ledgerOwners(es), nil
	})
}

// ledgerOwners keys heapd's ledger entries by buffer inode.
func ledgerOwners(es []daemon.LedgerEntry) map[uint64]scan.Owner {
	owners := make(map[uint64]scan.Owner, len(es))
	for _, e := range es {
		if e.Inode == 0 {
			continue // not known: cannot be joined
		}
		client := e.Comm
		if client == "" {
			client = fmt.Sprintf("uid %d", e.UID)
		}
		owners[e.Inode] = scan.Owner{
			Client: client, PID: int(e.PID), UID: e.UID,
			Lease: strconv.FormatUint(e.ID, 10), Heap: e.Heap,
		}
	}
	return owners
}

// topOwner is one heapd client whose buffers a process holds: what the
// per-process view shows in OWNER and -o json in processes[].owners.
type topOwner struct {
	// Client, PID and UID are heapd's owner of the buffers (scan.Owner).
	Client string `json:"client"`
	PID    int    `json:"pid,omitempty"`
	UID    uint32 `json:"uid"`
	// Buffers and Bytes are what the process holds of that owner's
	// buffers (each buffer's full size).
	Buffers int   `json:"buffers"`
	Bytes   int64 `json:"bytes"`
}

// topProcess is a process of the per-process view with the heapd owners
// of the buffers it holds.
type topProcess struct {
	scan.Process
	// Owners are heapd's owners of the buffers the process holds, most
	// bytes first; empty when none of them came from heapd or heapd's
	// ledger was not joined.
	Owners []topOwner `json:"owners,omitempty"`
}

// processOwners joins the ledger owners of s's buffers into its
// processes: for each pid, the heapd owners of the buffers it holds.
func processOwners(s *scan.Snapshot) map[int][]topOwner {
	type key struct {
		client string
		pid    int
		uid    uint32
	}
	by := map[int]map[key]*topOwner{}
	for _, b := range s.Buffers {
		if b.Owner == nil {
			continue
		}
		k := key{b.Owner.Client, b.Owner.PID, b.Owner.UID}
		for _, h := range b.Holders {
			m := by[h.PID]
			if m == nil {
				m = map[key]*topOwner{}
				by[h.PID] = m
			}
			o := m[k]
			if o == nil {
				o = &topOwner{Client: k.client, PID: k.pid, UID: k.uid}
				m[k] = o
			}
			o.Buffers++
			o.Bytes += b.Size
		}
	}
	out := make(map[int][]topOwner, len(by))
	for pid, m := range by {
		list := make([]topOwner, 0, len(m))
		for _, o := range m {
			list = append(list, *o)
		}
		sort.Slice(list, func(i, j int) bool {
			if list[i].Bytes != list[j].Bytes {
				return list[i].Bytes > list[j].Bytes
			}
			if list[i].Client != list[j].Client {
				return list[i].Client < list[j].Client
			}
			return list[i].PID < list[j].PID
		})
		out[pid] = list
	}
	return out
}

// topProcesses returns s's processes with their heapd owners.
func topProcesses(s *scan.Snapshot) []topProcess {
	owners := processOwners(s)
	out := make([]topProcess, len(s.Processes))
	for i, p := range s.Processes {
		out[i] = topProcess{Process: p, Owners: owners[p.PID]}
	}
	return out
}

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
