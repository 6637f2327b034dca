package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/units"
	"github.com/heapd/heapd/protocol"
)

// statusOutput is what `heapctl status` prints.
type statusOutput struct {
	Socket   string          `json:"socket"`
	Daemon   string          `json:"daemon"`
	Protocol string          `json:"protocol"`
	Features []string        `json:"features"`
	Uptime   string          `json:"uptime"`
	UptimeMS int64           `json:"uptime_ms"`
	Heaps    []heap.Info     `json:"heaps"`
	Problems []string        `json:"problems,omitempty"`
	Me       *protocol.Usage `json:"me,omitempty"`
}

func statusCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show heapd's version, uptime, heaps, and what it charges to you",
		Long: `status asks heapd (at $HEAPD_SOCKET, or /run/heapd/socket) who it is, how long
it has been running, which heaps it serves, and who it sees you as and what
it charges to you. It fails when heapd is not running.`,
		Example: `  heapctl status
  heapctl status -o json
  heapctl status --wait 5s   # wait for a starting heapd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c := &client.Client{}
			defer c.Close()
			info, err := waitInfo(ctx, c, wait)
			if err != nil {
				return err
			}
			g.logger().Info("using heapd", "socket", c.SocketPath(), "daemon", info.Version)
			hs, problems, err := c.Heaps(ctx)
			if err != nil {
				return err
			}
			out := statusOutput{
				Socket:   c.SocketPath(),
				Daemon:   info.Version,
				Protocol: fmt.Sprintf("%d.%d", info.Major, info.Minor),
				Features: featureNames(info.Features),
				Uptime:   (info.Uptime + time.Since(info.Connected)).Round(time.Second).String(),
				UptimeMS: (info.Uptime + time.Since(info.Connected)).Milliseconds(),
				Problems: problems,
			}
			for _, h := range hs {
				out.Heaps = append(out.Heaps, daemon.HeapFromWire(h))
			}
			if info.Features&protocol.FeatureUsage != 0 {
				if out.Me, err = c.Usage(ctx); err != nil {
					return err
				}
			}
			return g.emit(out, func(w io.Writer) error { return statusTable(w, out) })
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for heapd to answer (for scripts that just started it)")
	return cmd
}

// waitInfo connects, retrying while nothing listens yet, up to wait.
func waitInfo(ctx context.Context, c *client.Client, wait time.Duration) (client.ServerInfo, error) {
	deadline := time.Now().Add(wait)
	for {
		cctx, cancel := context.WithTimeout(ctx, dialTimeout)
		info, err := c.Info(cctx)
		cancel()
		if err == nil || !errors.Is(err, client.ErrNoDaemon) || time.Now().After(deadline) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func featureNames(f protocol.Feature) []string {
	names := []string{}
	for _, x := range []struct {
		f    protocol.Feature
		name string
	}{{protocol.FeatureImage, "image"}, {protocol.FeatureBatch, "batch"}, {protocol.FeatureEvents, "events"},
		{protocol.FeatureUsage, "usage"}, {protocol.FeatureDeviceSet, "device-set"}} {
		if f&x.f != 0 {
			names = append(names, x.name)
		}
	}
	return names
}

func limit(v uint64, format func(uint64) string) string {
	if v == protocol.Unlimited {
		return "none"
	}
	return format(v)
}

func statusTable(w io.Writer, out statusOutput) error {
	fmt.Fprintf(w, "daemon:   %s (protocol %s; %s)\n", out.Daemon, out.Protocol, strings.Join(out.Features, ", "))
	fmt.Fprintf(w, "socket:   %s\n", out.Socket)
	fmt.Fprintf(w, "uptime:   %s\n\n", out.Uptime)
	if err := heapsTable(w, heapsOutput{Heaps: out.Heaps, Problems: out.Problems}); err != nil {
		return err
	}
	u := out.Me
	if u == nil {
		return nil
	}
	size := func(v uint64) string { return units.FormatSize(int64(min(v, 1<<62))) }
	count := func(v uint64) string { return fmt.Sprint(v) }
	fmt.Fprintf(w, "\nyou (as heapd sees you): uid %d gid %d groups %v pid %d (%s)\n", u.UID, u.GID, u.Groups, u.PID, u.Comm)
	fmt.Fprintf(w, "policy:   %s\n", u.Policy)
	if u.Flags&protocol.UsageAccounted != 0 {
		fmt.Fprintf(w, "charged:  %s in %d buffers (limits: %s, %s buffers; largest allocation %s)\n",
			size(u.Bytes), u.Buffers, limit(u.LimitBytes, size), limit(u.LimitBuffers, count), limit(u.MaxAlloc, size))
	} else {
		fmt.Fprintf(w, "charged:  not accounted by this heapd (no ledger follows buffers after hand-out)\n")
	}
	fmt.Fprintf(w, "handed out since heapd started: %s in %d buffers\n", size(u.TotalBytes), u.TotalBuffers)
	if len(u.Heaps) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HEAP\tCHARGED\tBUFFERS\tLIMIT\tBUFFER LIMIT")
		for _, h := range u.Heaps {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", h.Heap, size(h.Bytes), h.Buffers, limit(h.LimitBytes, size), limit(h.LimitBuffers, count))
		}
		return tw.Flush()
	}
	return nil
}
