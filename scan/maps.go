package scan

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// ErrMalformed means kernel text (maps, bufinfo) could not be parsed.
// Errors from ParseMaps and ParseBufinfo wrap it.
var ErrMalformed = errors.New("scan: malformed kernel text")

// dmabufPathPrefix starts the path the kernel shows for a mapped DMA-BUF
// in /proc/<pid>/maps: "/dmabuf:" and the buffer's name, if it has one.
const dmabufPathPrefix = "/dmabuf:"

// Mapping is one line of /proc/<pid>/maps that maps a DMA-BUF. It is a
// plain value.
type Mapping struct {
	// Start and End are the virtual addresses of the mapping, End
	// exclusive.
	Start, End uint64
	// Perms are the four permission letters, such as "rw-s".
	Perms string
	// Offset is the file offset of the mapping. DRM exporters map through
	// a fake offset (vgem: 0x100000000), so it is not a position in the
	// buffer.
	Offset uint64
	// Dev is the device of the DMA-BUF pseudo file system, "major:minor"
	// in hex as the kernel prints it.
	Dev string
	// Inode is the buffer's inode number: the same number as fdinfo's
	// "ino:" and bufinfo's ino column.
	Inode uint64
	// Name is the buffer's name at the time of the read, "" if none.
	Name string
}

// Len is the length of the mapping in bytes.
func (m Mapping) Len() uint64 { return m.End - m.Start }

// ParseMaps returns the DMA-BUF mappings in the text of /proc/<pid>/maps,
// in the order the kernel listed them. Only lines whose path starts with
// "/dmabuf:" are parsed; any other line is skipped without looking at it,
// so most processes cost one search of the text. A DMA-BUF line whose
// fields do not parse is an error wrapping ErrMalformed. The name is taken
// verbatim (it may hold blanks and colons); a name holding a newline, which
// SET_NAME allows, cannot be told from the next line and ends at it.
//
// ParseMaps is a pure function, safe for concurrent use; the Mappings do
// not refer to data.
func ParseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	err := forEachMapping(data, func(m Mapping) { out = append(out, m) })
	return out, err
}

// forEachMapping calls f for every DMA-BUF mapping in data, without
// collecting them.
func forEachMapping(data []byte, f func(Mapping)) error {
	marker := []byte(" " + dmabufPathPrefix)
	for {
		i := bytes.Index(data, marker)
		if i < 0 {
			return nil
		}
		start := bytes.LastIndexByte(data[:i], '\n') + 1
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i
		}
		line := data[start:end]
		if end < len(data) {
			data = data[end+1:]
		} else {
			data = nil
		}
		m, ok, err := parseMapsLine(line)
		if err != nil {
			return err
		}
		if ok {
			f(m)
		}
	}
}

// parseMapsLine parses "start-end perms offset dev inode path". ok is false
// when the path is not a DMA-BUF (the marker appeared inside another path).
func parseMapsLine(line []byte) (m Mapping, ok bool, err error) {
	bad := func(what string) (Mapping, bool, error) {
		return Mapping{}, false, fmt.Errorf("maps line %q: %s: %w", truncate(line, 120), what, ErrMalformed)
	}
	rest := line
	var fields [5][]byte
	for i := range fields {
		rest = bytes.TrimLeft(rest, " ")
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			if i < 4 {
				return bad("too few fields")
			}
			j = len(rest)
		}
		fields[i], rest = rest[:j], rest[j:]
	}
	path := bytes.TrimLeft(rest, " ")
	name, isBuf := bytes.CutPrefix(path, []byte(dmabufPathPrefix))
	if !isBuf {
		return Mapping{}, false, nil
	}
	lo, hi, found := bytes.Cut(fields[0], []byte{'-'})
	if !found {
		return bad("no address range")
	}
	if m.Start, err = strconv.ParseUint(string(lo), 16, 64); err != nil {
		return bad("start address")
	}
	if m.End, err = strconv.ParseUint(string(hi), 16, 64); err != nil {
		return bad("end address")
	}
	if m.End < m.Start {
		return bad("end before start")
	}
	if len(fields[1]) != 4 {
		return bad("permissions")
	}
	m.Perms = string(fields[1])
	if m.Offset, err = strconv.ParseUint(string(fields[2]), 16, 64); err != nil {
		return bad("offset")
	}
	if _, _, found := bytes.Cut(fields[3], []byte{':'}); !found {
		return bad("device")
	}
	m.Dev = string(fields[3])
	if m.Inode, err = strconv.ParseUint(string(fields[4]), 10, 64); err != nil {
		return bad("inode")
	}
	m.Name = string(name)
	return m, true, nil
}

// truncate shortens b for an error message.
func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
