package scan

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
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
	var cur *BufinfoEntry
	inDevices := false
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		switch {
		case len(line) == 0:
			continue
		case line[0] == '\t':
			if cur == nil {
				continue
			}
			text := string(line[1:])
			switch {
			case text == "Attached Devices:":
				inDevices = true
			case inDevices:
				cur.Devices = append(cur.Devices, text)
			default:
				cur.Fences = append(cur.Fences, text)
			}
		case bytes.HasPrefix(line, []byte("Total ")):
			inDevices = false
			var n int
			var size int64
			if _, err := fmt.Sscanf(string(line), "Total %d objects, %d bytes", &n, &size); err == nil {
				out.Objects, out.Bytes = n, size
			}
		case line[0] >= '0' && line[0] <= '9':
			e, err := parseBufinfoLine(line)
			if err != nil {
				return Bufinfo{}, fmt.Errorf("bufinfo line %d: %w", lineNo, err)
			}
			out.Buffers = append(out.Buffers, e)
			cur, inDevices = &out.Buffers[len(out.Buffers)-1], false
		default:
			// The header lines, or something a later kernel added.
		}
	}
	return out, nil
}

func parseBufinfoLine(line []byte) (BufinfoEntry, error) {
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
	size, err := strconv.ParseUint(string(f[0]), 10, 64)
	if err != nil || size > math.MaxInt64 {
		return bad("size")
	}
	e.Size = int64(size)
	flags, err := strconv.ParseUint(string(f[1]), 16, 32)
	if err != nil {
		return bad("flags")
	}
	mode, err := strconv.ParseUint(string(f[2]), 16, 32)
	if err != nil {
		return bad("mode")
	}
	e.Flags, e.Mode = uint32(flags), uint32(mode)
	if e.Count, err = strconv.ParseInt(string(f[3]), 10, 64); err != nil {
		return bad("count")
	}
	e.Exporter = string(f[4])
	if e.Inode, err = strconv.ParseUint(string(f[5]), 10, 64); err != nil {
		return bad("inode")
	}
	if name := string(rest); name != bufinfoNoName {
		e.Name = name
	}
	return e, nil
}
