package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/heap"
)

func resolveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resolve [DEVICE]",
		Short: "Explain which heap each display device scans out from, and why",
		Long: `resolve shows, for one display device (by id or driver name) or for every
display, each candidate heap the resolver tried in order, the step that failed
(alloc, import, addfb2, plane) with the errno, and the heap chosen for
scanout/<device>. The probe is real: a small buffer from each candidate is
imported into the display with PRIME and wrapped in a framebuffer (ADDFB2).`,
		Example: `  heapctl resolve
  heapctl resolve vkms
  heapctl resolve platform-gpu -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := g.openRegistry()
			if err != nil {
				return err
			}
			defer reg.Close()
			var out []heap.Resolution
			if len(args) == 1 {
				res, err := reg.Resolution(args[0])
				if err != nil {
					return err
				}
				out = []heap.Resolution{res}
			} else {
				out = reg.Resolutions()
			}
			return g.emit(out, func(w io.Writer) error {
				if len(out) == 0 {
					fmt.Fprintln(w, "no display devices: no scanout heaps")
				}
				for _, r := range out {
					fmt.Fprintln(w, r.String())
				}
				return nil
			})
		},
	}
}
