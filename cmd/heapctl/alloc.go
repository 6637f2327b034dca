package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/units"
)

// allocResult is one verified allocation, as printed.
type allocResult struct {
	Heap      string         `json:"heap"`
	Backend   heap.Backend   `json:"backend"`
	Requested int64          `json:"requested"`
	Size      int64          `json:"size"`
	Inode     uint64         `json:"inode"`
	Name      string         `json:"name"`
	Exporter  string         `json:"exporter"`
	Pattern   string         `json:"pattern"`
	Verified  bool           `json:"verified"`
	Emulated  bool           `json:"emulated"`
	Error     string         `json:"error,omitempty"`
	Devices   []string       `json:"devices,omitempty"`
	Layout    *drm.Layout    `json:"layout,omitempty"`
	Attempts  []heap.Attempt `json:"attempts,omitempty"`
}

// pattern fills and checks buffer contents.
type pattern struct {
	desc string
	b    byte
	word bool // 32-bit little-endian counter instead of a byte
}

func parsePattern(s string) (pattern, error) {
	if s == "" || s == "counter" {
		return pattern{desc: "counter", word: true}, nil
	}
	v, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		return pattern{}, fmt.Errorf("--fill %q: want a byte value (0xa5, 165) or \"counter\"", s)
	}
	return pattern{desc: fmt.Sprintf("0x%02x", v), b: byte(v)}, nil
}

func (p pattern) fill(b []byte) {
	if !p.word {
		for i := range b {
			b[i] = p.b
		}
		return
	}
	for i := 0; i+4 <= len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], uint32(i/4))
	}
}

// check returns the offset of the first wrong byte, or -1.
func (p pattern) check(b []byte) int {
	if !p.word {
		for i, v := range b {
			if v != p.b {
				return i
			}
		}
		return -1
	}
	for i := 0; i+4 <= len(b); i += 4 {
		if binary.LittleEndian.Uint32(b[i:]) != uint32(i/4) {
			return i
		}
	}
	return -1
}

func allocCmd(g *globals) *cobra.Command {
	var (
		heapName, sizeStr, fill, name string
		hold                          time.Duration
		all                           bool
		width, height                 uint32
		format, modifier              string
		devices                       []string
		fallback                      bool
	)
	cmd := &cobra.Command{
		Use:   "alloc --heap NAME --size SIZE",
		Short: "Allocate a buffer, map it, write a pattern and verify it through CPU sync",
		Example: `  heapctl alloc --heap system --size 8MiB
  heapctl alloc --heap contiguous --size 4KiB --fill 0xa5 --hold 30s
  heapctl alloc --all --size 1MiB -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var img *heap.Image
			var size int64
			switch {
			case width != 0 || height != 0:
				if sizeStr != "" {
					return fmt.Errorf("give either --size or --width/--height, not both")
				}
				var err error
				if img, err = parseImage(width, height, format, modifier); err != nil {
					return err
				}
			case sizeStr == "":
				return fmt.Errorf("--size or --width and --height are required")
			default:
				var err error
				if size, err = units.ParseSize(sizeStr); err != nil {
					return fmt.Errorf("--size: %w", err)
				}
			}
			pat, err := parsePattern(fill)
			if err != nil {
				return err
			}
			if name != "" {
				if err := dmabuf.ValidateName(name); err != nil {
					return fmt.Errorf("--name: %w", err)
				}
			}
			src, err := g.openSource(cmd.Context())
			if err != nil {
				return err
			}
			defer src.Close()
			names := []string{heapName}
			if all {
				heaps, _, err := src.list(cmd.Context())
				if err != nil {
					return err
				}
				names = names[:0]
				for _, h := range heaps {
					names = append(names, h.Name)
				}
			}
			var results []allocResult
			var failed []string
			if all {
				heapName = ""
			}
			if img != nil || len(devices) > 0 {
				if all {
					return fmt.Errorf("--all cannot be combined with an image or --device")
				}
				if !cmd.Flags().Changed("heap") && len(devices) > 0 {
					heapName = ""
				}
				names = []string{heapName}
			}
			for _, n := range names {
				res, buf, err := allocVerify(cmd.Context(), src, heap.Request{Heap: n, Devices: devices, Size: size, Image: img, Name: name, NonContiguousFallback: fallback}, pat)
				if err != nil {
					if !all {
						return err
					}
					res.Error = err.Error()
					failed = append(failed, n)
				}
				if buf != nil {
					defer buf.Close()
				}
				results = append(results, res)
			}
			if err := g.emit(results, func(w io.Writer) error { return allocTable(w, results) }); err != nil {
				return err
			}
			if hold > 0 {
				fmt.Fprintf(g.stderr, "holding %d buffer(s) for %s\n", len(results)-len(failed), hold)
				select {
				case <-time.After(hold):
				case <-cmd.Context().Done():
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("allocation failed on %s", strings.Join(failed, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&heapName, "heap", "system", "heap to allocate from (see heapctl heaps)")
	f.StringVar(&sizeStr, "size", "", "buffer size: bytes or a binary unit (4096, 4KiB, 8MiB)")
	f.StringVar(&fill, "fill", "counter", `pattern to write and verify: a byte (0xa5) or "counter"`)
	f.StringVar(&name, "name", "", "debug name for the buffer (at most 31 bytes; default heapctl)")
	f.DurationVar(&hold, "hold", 0, "keep the buffers allocated for this long before exiting")
	f.BoolVar(&all, "all", false, "allocate on every available heap")
	f.Uint32Var(&width, "width", 0, "image width in pixels (sizes the buffer and its layout)")
	f.Uint32Var(&height, "height", 0, "image height in pixels")
	f.StringVar(&format, "format", "XR24", "image DRM fourcc (XR24 = XRGB8888)")
	f.StringVar(&modifier, "modifier", "LINEAR", "image format modifier")
	f.BoolVar(&fallback, "fallback-noncontiguous", false, "when a contiguous heap cannot fit the request, use non-contiguous memory that every device accepts in a probe")
	f.StringSliceVar(&devices, "device", nil, "DRM device (id or driver) the buffer must import into; repeatable")
	cmd.MarkFlagsMutuallyExclusive("heap", "all")
	return cmd
}

// allocVerify allocates on one heap and verifies the pattern. It returns the
// buffer (owned by the caller, nil on error) so --hold can keep it.
func allocVerify(ctx context.Context, src source, req heap.Request, pat pattern) (allocResult, *dmabuf.Buffer, error) {
	res := allocResult{Heap: req.Heap, Requested: req.Size, Pattern: pat.desc, Devices: req.Devices}
	a, backend, err := src.allocate(ctx, req)
	if a != nil {
		res.Attempts = a.Attempts
	}
	if err != nil {
		return res, nil, err
	}
	buf := a.Buffer
	res.Heap, res.Layout, res.Backend = a.Heap, a.Layout, backend
	res.Emulated = buf.Emulated()
	if err := verify(buf, pat, &res); err != nil {
		buf.Close()
		return res, nil, fmt.Errorf("heap %s: %w", res.Heap, err)
	}
	return res, buf, nil
}

func parseImage(width, height uint32, format, modifier string) (*heap.Image, error) {
	if width == 0 || height == 0 {
		return nil, fmt.Errorf("--width and --height go together and must be positive")
	}
	f, err := drm.ParseFormat(format)
	if err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	m, err := drm.ParseModifier(modifier)
	if err != nil {
		return nil, fmt.Errorf("--modifier: %w", err)
	}
	return &heap.Image{Width: width, Height: height, Format: f, Modifier: m}, nil
}

func verify(buf *dmabuf.Buffer, pat pattern, res *allocResult) error {
	res.Size = buf.Size()
	m, err := buf.Map(dmabuf.ProtReadWrite)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := buf.CPUAccess(dmabuf.Write, func() error { pat.fill(m.Bytes()); return nil }); err != nil {
		return err
	}
	bad := -1
	if err := buf.CPUAccess(dmabuf.Read, func() error { bad = pat.check(m.Bytes()); return nil }); err != nil {
		return err
	}
	if bad >= 0 {
		return fmt.Errorf("pattern mismatch at offset %d", bad)
	}
	res.Verified = true
	st, err := buf.Stat()
	if err != nil && !errors.Is(err, dmabuf.ErrNotSupported) {
		return err
	}
	res.Inode, res.Name, res.Exporter = st.Inode, st.Name, st.Exporter
	return nil
}

func allocTable(w io.Writer, rs []allocResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HEAP\tBACKEND\tSIZE\tINODE\tNAME\tEXPORTER\tPATTERN\tVERIFIED")
	for _, r := range rs {
		ok := "yes"
		if !r.Verified {
			ok = "NO: " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Heap, r.Backend, units.FormatSize(r.Size), r.Inode, r.Name, r.Exporter, r.Pattern, ok)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if l := r.Layout; l != nil {
			fmt.Fprintf(w, "layout: %dx%d %v %v pitch %d offset %d\n", l.Width, l.Height, l.Format, l.Modifier, l.Pitch, l.Offset)
		}
		for _, a := range r.Attempts {
			fmt.Fprintf(w, "tried: %s\n", a)
		}
		if r.Emulated {
			fmt.Fprintf(w, "note: %s is %s\n", r.Heap, dmabuf.EmulatedLabel)
		}
	}
	return nil
}
