package scan

import (
	"bytes"
	"fmt"
	"math"
)

// BufinfoPath is where debugfs shows every DMA-BUF of the system, relative
// to the root of debugfs (usually /sys/kernel/debug). Reading it needs root.
const BufinfoPath = "dma_buf/bufinfo"

// bufinfoNoName is what bufinfo prints for a buffer without a name.
const bufinfoNoName = "<none>"

// BufinfoEntry is one buffer as debugfs dma_buf/bufinfo lists it. It is a
// plain value.
type BufinfoEntry struct {
	// Size is the buffer size in bytes.
	Size int64
	// Flags are the open flags and Mode the fmode of the buffer's file.
	Flags, Mode uint32
	// Count is the number of references to the buffer's file (fds,
	// mappings and importers' references together).
	Count int64
	// Exporter is the heap name for heap buffers, the module name
	// otherwise.
	Exporter string
	// Inode identifies the buffer, as fdinfo's "ino:" does.
	Inode uint64
	// Name is the buffer's name, "" if none. The kernel prints "<none>"
	// for a buffer without a name, so a buffer named "<none>" also reads
	// as "".
	Name string
	// Fences are the fence lines, as the kernel wrote them without the
	// leading tab ("write fence:sw_sync scan.test seq 1 unsignalled").
	Fences []string
	// Devices are the names of the devices attached to the buffer (the
	// importers, such as "vgem" or "fe00b840.mailbox").
	Devices []string
}

// Bufinfo is the parsed text of debugfs dma_buf/bufinfo.
type Bufinfo struct {
	// Buffers are listed in the kernel's order (newest first).
	Buffers []BufinfoEntry
	// Objects and Bytes are the totals of the closing "Total N objects, M
	// bytes" line; -1 when it is missing (a truncated read).
	Objects int
	Bytes   int64
}

// ParseBufinfo parses the text of debugfs dma_buf/bufinfo as Linux 5.x and
// 6.x write it: a header, then per buffer a tab-separated line "size flags
// mode count exp_name ino name" (numbers zero-padded; flags and mode in
// hex), fence lines, "\tAttached Devices:" and one "\t<device>" line per
// attachment, and "Total N devices attached"; then "Total N objects, M
// bytes". Blank and unknown lines are skipped. A buffer line whose numbers
// do not parse is an error wrapping ErrMalformed.
//
// ParseBufinfo is a pure function, safe for concurrent use; the result does
// not refer to data.
func ParseBufinfo(data []byte) (Bufinfo, error) {
	out := Bufinfo{Objects: -1, Bytes: -1}
	var err error
	out.Objects, out.Bytes, err = forEachBufinfo(data, func(e *BufinfoEntry) {
		out.Buffers = append(out.Buffers, *e)
	})
	if err != nil {
		return Bufinfo{}, err
	}
	return out, nil
}

// forEachBufinfo parses bufinfo as ParseBufinfo does, handing each entry
// to f once complete instead of collecting them (the scan merges them
// straight into its own state). f may keep e's slices but not e. It
// returns the totals, -1 when missing.
func forEachBufinfo(data []byte, f func(e *BufinfoEntry)) (objects int, size int64, err error) {
	objects, size = -1, -1
	var cur BufinfoEntry
	have, inDevices := false, false
	lastExporter := "" // exporters repeat: share their strings
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		switch {
		case len(line) == 0:
			continue
		case line[0] == '\t':
			switch text := line[1:]; {
			case !have:
			case string(text) == "Attached Devices:":
				inDevices = true
			case inDevices:
				cur.Devices = append(cur.Devices, string(text))
			default:
				cur.Fences = append(cur.Fences, string(text))
			}
		case bytes.HasPrefix(line, []byte("Total ")):
			// "Total N devices attached" closes every buffer; "Total N
			// objects, M bytes" the file.
			inDevices = false
			if n, m, ok := parseTotals(line); ok {
				objects, size = n, m
			}
		case line[0] >= '0' && line[0] <= '9':
			e, err := parseBufinfoLine(line, &lastExporter)
			if err != nil {
				return -1, -1, fmt.Errorf("bufinfo line %d: %w", lineNo, err)
			}
			if have {
				f(&cur)
			}
			cur, have, inDevices = e, true, false
		default:
			// The header lines, or something a later kernel added.
		}
	}
	if have {
		f(&cur)
	}
	return objects, size, nil
}

// parseTotals parses "Total N objects, M bytes".
func parseTotals(line []byte) (objects int, size int64, ok bool) {
	rest, ok := bytes.CutPrefix(line, []byte("Total "))
	if !ok {
		return 0, 0, false
	}
	n, rest, ok := bytes.Cut(rest, []byte(" objects, "))
	if !ok {
		return 0, 0, false
	}
	m, ok := bytes.CutSuffix(rest, []byte(" bytes"))
	if !ok {
		return 0, 0, false
	}
	nv, ok1 := parseUint(n, 10)
	mv, ok2 := parseUint(m, 10)
	if !ok1 || !ok2 || nv > math.MaxInt32 || mv > math.MaxInt64 {
		return 0, 0, false
	}
	return int(nv), int64(mv), true
}

func parseBufinfoLine(line []byte, lastExporter *string) (BufinfoEntry, error) {
	var e BufinfoEntry
	bad := func(what string) (BufinfoEntry, error) {
		return BufinfoEntry{}, fmt.Errorf("%q: %s: %w", truncate(line, 120), what, ErrMalformed)
	}
	// The name is last and may hold tabs: cut exactly six fields.
	var f [6][]byte
	rest := line
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte{'\t'})
		if !ok {
			return bad("too few fields")
		}
	}
	size, ok := parseUint(f[0], 10)
	if !ok || size > math.MaxInt64 {
		return bad("size")
	}
	e.Size = int64(size)
	flags, ok := parseUint(f[1], 16)
	if !ok || flags > math.MaxUint32 {
		return bad("flags")
	}
	mode, ok := parseUint(f[2], 16)
	if !ok || mode > math.MaxUint32 {
		return bad("mode")
	}
	e.Flags, e.Mode = uint32(flags), uint32(mode)
	count, ok := parseUint(f[3], 10)
	if !ok || count > math.MaxInt64 {
		return bad("count")
	}
	e.Count = int64(count)
	if string(f[4]) != *lastExporter {
		*lastExporter = string(f[4])
	}
	e.Exporter = *lastExporter
	if e.Inode, ok = parseUint(f[5], 10); !ok {
		return bad("inode")
	}
	if name := string(rest); name != bufinfoNoName {
		e.Name = name
	}
	return e, nil
}
