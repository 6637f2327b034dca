package dmaheap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// CMAStats are the kernel's CMA counters from /proc/meminfo, in bytes. It is
// a plain value; the zero value means no CMA.
type CMAStats struct {
	// Present reports whether the kernel has CMA at all (CONFIG_CMA): the
	// CmaTotal and CmaFree lines exist.
	Present bool
	// Total is CmaTotal: the size of every CMA area together.
	Total int64
	// Free is CmaFree: the part of it the page allocator counts as free.
	// Free memory is not necessarily contiguous: an allocation of a size
	// below Free can still fail when the area is fragmented.
	Free int64
}

// String renders the counters for people, as /proc/meminfo names them.
func (s CMAStats) String() string {
	if !s.Present {
		return "no CMA (kernel without CONFIG_CMA)"
	}
	return fmt.Sprintf("CmaFree %s of CmaTotal %s", fmtSize(s.Free), fmtSize(s.Total))
}

// MemInfo reads the CMA counters of the running kernel from /proc/meminfo.
// It is (*Config)(nil).MemInfo: it keeps no fd and is safe for concurrent
// use.
func MemInfo() (CMAStats, error) { return (*Config)(nil).MemInfo() }

// MemInfo reads CmaTotal and CmaFree from ProcDir/meminfo. A kernel without
// CMA gives CMAStats{Present: false} and no error. Safe for concurrent use.
func (c *Config) MemInfo() (CMAStats, error) {
	b, err := os.ReadFile(c.meminfoPath())
	if err != nil {
		return CMAStats{}, fmt.Errorf("dmaheap: %w", err)
	}
	s, err := parseMeminfo(b)
	if err != nil {
		return CMAStats{}, fmt.Errorf("dmaheap: %s: %w", c.meminfoPath(), err)
	}
	return s, nil
}

// errMeminfo marks malformed CMA lines in /proc/meminfo.
var errMeminfo = errors.New("malformed meminfo")

// parseMeminfo extracts CmaTotal and CmaFree from the text of
// /proc/meminfo. Other lines are ignored whatever they hold; the two CMA
// lines must be well formed ("CmaTotal:   65536 kB"), appear at most once,
// and appear together.
func parseMeminfo(data []byte) (CMAStats, error) {
	var s CMAStats
	var haveTotal, haveFree bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		var seen *bool
		switch key {
		case "CmaTotal":
			dst, seen = &s.Total, &haveTotal
		case "CmaFree":
			dst, seen = &s.Free, &haveFree
		default:
			continue
		}
		if *seen {
			return CMAStats{}, fmt.Errorf("%s appears twice: %w", key, errMeminfo)
		}
		v, err := parseMeminfoValue(rest)
		if err != nil {
			return CMAStats{}, fmt.Errorf("%s: %w", key, err)
		}
		*dst, *seen = v, true
	}
	if err := sc.Err(); err != nil {
		return CMAStats{}, fmt.Errorf("%w: %w", errMeminfo, err)
	}
	if haveTotal != haveFree {
		return CMAStats{}, fmt.Errorf("CmaTotal and CmaFree must appear together: %w", errMeminfo)
	}
	s.Present = haveTotal
	return s, nil
}

// parseMeminfoValue parses "   65536 kB" (or a bare number of bytes).
func parseMeminfoValue(s string) (int64, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return 0, fmt.Errorf("value %q: %w", strings.TrimSpace(s), errMeminfo)
	}
	v, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || f[0][0] < '0' || f[0][0] > '9' {
		return 0, fmt.Errorf("value %q: %w", f[0], errMeminfo)
	}
	if len(f) == 1 {
		return v, nil
	}
	if f[1] != "kB" {
		return 0, fmt.Errorf("unit %q (want kB): %w", f[1], errMeminfo)
	}
	if v > math.MaxInt64/1024 {
		return 0, fmt.Errorf("value %s kB overflows: %w", f[0], errMeminfo)
	}
	return v * 1024, nil
}
