package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/drm"
)

// deviceRow is one DRM device as heapctl devices prints it.
type deviceRow struct {
	drm.DeviceInfo
	Role string `json:"role"` // "display" or "render-only"
	// Planes lists the display's planes and whether each takes XRGB8888
	// LINEAR; empty for render-only devices or when the primary node could
	// not be opened (PlanesError says why).
	Planes      []planeRow `json:"planes,omitempty"`
	PlanesError string     `json:"planes_error,omitempty"`
}

type planeRow struct {
	ID          uint32 `json:"id"`
	Type        string `json:"type"`
	XRGB8888Lin bool   `json:"xrgb8888_linear"`
	Formats     int    `json:"formats"`
}

func devicesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List DRM devices: id, driver, nodes, display or render-only, IOMMU, PRIME, planes",
		Example: `  heapctl devices
  heapctl devices -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *drm.Config
			if g.root != "" {
				cfg = &drm.Config{SysfsRoot: g.root + "/sys", DevRoot: g.root + "/dev"}
			}
			infos, err := drm.Discover(cfg)
			if err != nil {
				return err
			}
			rows := make([]deviceRow, 0, len(infos))
			for _, info := range infos {
				rows = append(rows, describeDevice(info))
			}
			return g.emit(rows, func(w io.Writer) error { return devicesTable(w, rows) })
		},
	}
}

func describeDevice(info drm.DeviceInfo) deviceRow {
	row := deviceRow{DeviceInfo: info, Role: "render-only"}
	if !info.Display() {
		return row
	}
	row.Role = "display"
	dev, err := info.Open(drm.NodePrimary)
	if err != nil {
		row.PlanesError = err.Error()
		return row
	}
	defer dev.Close()
	planes, err := dev.Planes()
	if err != nil {
		row.PlanesError = err.Error()
		return row
	}
	for _, p := range planes {
		row.Planes = append(row.Planes, planeRow{ID: p.ID, Type: p.Type.String(),
			XRGB8888Lin: p.Supports(drm.FormatXRGB8888, drm.ModLinear), Formats: len(p.Formats)})
	}
	return row
}

func devicesTable(w io.Writer, rows []deviceRow) error {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no DRM devices (no /sys/class/drm entries)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDRIVER\tROLE\tNODES\tIOMMU\tPRIME\tPLANES (XR24 LINEAR)")
	for _, r := range rows {
		var nodes []string
		for _, n := range []*drm.Node{r.Primary, r.Render} {
			if n != nil {
				nodes = append(nodes, n.Path)
			}
		}
		prime := "?"
		if r.Caps != nil {
			prime = primeCaps(r.Caps)
		}
		planes := "-"
		switch {
		case r.PlanesError != "":
			planes = "unknown: " + r.PlanesError
		case len(r.Planes) > 0:
			var ps []string
			for _, p := range r.Planes {
				ps = append(ps, fmt.Sprintf("%d %s %s", p.ID, p.Type, yesNo(p.XRGB8888Lin)))
			}
			planes = strings.Join(ps, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Driver, r.Role, strings.Join(nodes, " "), yesNo(r.IOMMU), prime, planes)
	}
	return tw.Flush()
}

func primeCaps(c *drm.Caps) string {
	var s []string
	if c.PrimeImport {
		s = append(s, "import")
	}
	if c.PrimeExport {
		s = append(s, "export")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "+")
}
