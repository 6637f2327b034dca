package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/units"
)

func (g *globals) openRegistry() (*heap.Registry, error) {
	return heap.Open(&heap.Config{Root: g.root, Logger: g.logger()})
}

type heapsOutput struct {
	Heaps    []heap.Info `json:"heaps"`
	Problems []string    `json:"problems,omitempty"`
}

func heapsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "heaps",
		Short: "List every available heap, its backend and what it maps to",
		Example: `  heapctl heaps
  heapctl heaps -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := g.openSource(cmd.Context())
			if err != nil {
				return err
			}
			defer src.Close()
			heaps, problems, err := src.list(cmd.Context())
			if err != nil {
				return err
			}
			out := heapsOutput{Heaps: heaps, Problems: problems}
			return g.emit(out, func(w io.Writer) error { return heapsTable(w, out) })
		},
	}
}

func heapsTable(w io.Writer, out heapsOutput) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBACKEND\tTARGET\tCONTIGUOUS\tMAX SIZE\tCMA FREE/TOTAL\tNOTE")
	for _, h := range out.Heaps {
		maxSize, cma := "-", "-"
		if h.MaxSize > 0 {
			maxSize = units.FormatSize(h.MaxSize)
		}
		if h.CMATotal > 0 {
			cma = units.FormatSize(h.CMAFree) + " / " + units.FormatSize(h.CMATotal)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Backend, h.Target, yesNo(h.Contiguous), maxSize, cma, h.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range out.Problems {
		fmt.Fprintf(w, "note: %s\n", p)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
