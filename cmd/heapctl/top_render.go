package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/heapd/heapd/scan"
)

// summary is top's one-line overview of a snapshot.
func summary(s *scan.Snapshot) string {
	return fmt.Sprintf("%d buffers, %s, held by %d processes (%d looked at, scan %s)",
		len(s.Buffers), topSize(s.TotalBytes()), len(s.Processes), s.Stats.Processes,
		s.Stats.Duration.Round(100_000))
}

// writeTop writes view of s as a table, then the notes and problems.
// With maxRows > 0 it shows at most that many rows of the table and says
// how many more there are; with width > 0 it cuts every line to width
// characters. The live view passes the terminal's size.
func writeTop(w io.Writer, s *scan.Snapshot, view topView, width, maxRows int) error {
	var tb bytes.Buffer
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
	var rows int
	switch view {
	case viewProcesses:
		rows = len(s.Processes)
		owners := processOwners(s)
		fmt.Fprintln(tw, "PID\tUSER\tCOMMAND\tBUFFERS\tFDS\tMAPS\tSHARE\tBYTES\tOWNER")
		for _, p := range firstN(s.Processes, maxRows) {
			user := p.User
			if user == "" {
				user = fmt.Sprint(p.UID)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", p.PID, user, clean(p.Comm), p.Buffers, p.FDs, p.Maps,
				topSize(p.Share), topSize(p.Bytes), ownerList(owners[p.PID]))
		}
	case viewBuffers:
		rows = len(s.Buffers)
		fmt.Fprintln(tw, "INODE\tSIZE\tEXPORTER\tNAME\tHOLDERS\tDEVICES\tOWNER")
		for _, b := range firstN(s.Buffers, maxRows) {
			size := topSize(b.Size)
			if b.SizeEstimated {
				size = "≥" + size
			}
			owner := "-"
			if b.Owner != nil {
				owner = ownerName(b.Owner.Client, b.Owner.PID)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Inode, size, orDash(b.Exporter), orDash(clean(b.Name)),
				holders(b.Holders), devices(b.Devices), owner)
		}
	case viewHeaps:
		rows = len(s.Heaps)
		fmt.Fprintln(tw, "HEAP\tHEAPD NAME\tKIND\tBUFFERS\tBYTES\tCMA FREE/TOTAL")
		for _, h := range firstN(s.Heaps, maxRows) {
			kind := "exporter"
			switch {
			case h.Heap && h.Contiguous:
				kind = "heap, contiguous"
			case h.Heap:
				kind = "heap"
			}
			cma := "-"
			if h.CMATotal > 0 {
				cma = topSize(h.CMAFree) + " / " + topSize(h.CMATotal)
			}
			name := h.Name
			if name == "" {
				name = "?" // seen only in mappings
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", clean(name), orDash(h.HeapdName), kind, h.Buffers, topSize(h.Bytes), cma)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if maxRows > 0 && rows > maxRows {
		fmt.Fprintf(&tb, "… %d more\n", rows-maxRows)
	}
	if rows == 0 {
		fmt.Fprintf(&tb, "(no %s)\n", emptyWhat(view, s))
	}
	for _, n := range s.Notes() {
		fmt.Fprintf(&tb, "note: %s\n", n)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&tb, "problem: %s\n", clean(p))
	}
	if width > 0 {
		return writeCut(w, tb.Bytes(), width)
	}
	_, err := w.Write(tb.Bytes())
	return err
}

// topSize renders n bytes for a quick read: the largest binary unit with
// up to one decimal ("1.1 MiB"), rounded; units.FormatSize is for exact
// sizes.
func topSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	i := 0
	for v >= 1023.95 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + " " + units[i]
}

func emptyWhat(view topView, s *scan.Snapshot) string {
	switch view {
	case viewBuffers:
		return "DMA-BUFs found"
	case viewHeaps:
		return "heaps or exporters"
	}
	if len(s.Buffers) > 0 {
		return "readable process holds a DMA-BUF"
	}
	return "process holds a DMA-BUF"
}

func firstN[T any](xs []T, n int) []T {
	if n > 0 && len(xs) > n {
		return xs[:n]
	}
	return xs
}

// holders renders "comm[pid] 2fd 1map" for each holder.
func holders(hs []scan.Holder) string {
	if len(hs) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(hs))
	for _, h := range hs {
		p := fmt.Sprintf("%s[%d]", clean(h.Comm), h.PID)
		if h.FDs > 0 {
			p += fmt.Sprintf(" %dfd", h.FDs)
		}
		if h.Maps > 0 {
			p += fmt.Sprintf(" %dmap", h.Maps)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func devices(ds []string) string {
	if ds == nil {
		return "?" // bufinfo not read
	}
	if len(ds) == 0 {
		return "-"
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = clean(d)
	}
	return strings.Join(out, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clean makes a string from the kernel or another process (buffer names,
// commands) safe to print: control characters, escape sequences among
// them, become '?', and a tab would break the table.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

// writeCut writes text with every line cut to width characters.
func writeCut(w io.Writer, text []byte, width int) error {
	var out bytes.Buffer
	for len(text) > 0 {
		line, rest, _ := bytes.Cut(text, []byte{'\n'})
		text = rest
		if utf8.RuneCount(line) > width {
			n := 0
			for i := range string(line) {
				if n == width {
					line = line[:i]
					break
				}
				n++
			}
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	_, err := w.Write(out.Bytes())
	return err
}

// ownerName renders a heapd owner as "client[pid]" (just the client when
// the pid is unknown).
func ownerName(client string, pid int) string {
	if pid == 0 {
		return clean(client)
	}
	return fmt.Sprintf("%s[%d]", clean(client), pid)
}

// ownerList renders a process's heapd owners for the OWNER column: the
// owner of most bytes, "+N" for the others (-o json lists them all), "-"
// for none.
func ownerList(owners []topOwner) string {
	if len(owners) == 0 {
		return "-"
	}
	s := ownerName(owners[0].Client, owners[0].PID)
	if len(owners) > 1 {
		s += fmt.Sprintf(" +%d", len(owners)-1)
	}
	return s
}
