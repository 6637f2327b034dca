package scan

import (
	"bytes"
	"math"

	"github.com/heapd/heapd/dmabuf"
)

// fdinfoKeys are the keys dmabuf.ParseFDInfo reads.
var fdinfoKeys = [...]string{"pos", "flags", "mnt_id", "ino", "size", "count", "exp_name", "name"}

// interner hands out one string per distinct exporter or name, so that
// 10,000 buffers of heap "system" share one string.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	in[s] = s
	return s
}

// parseFDInfo is dmabuf.ParseFDInfo without its allocations, for the
// scan's hot loop: it reads the kernel's own layout ("key:\tvalue", every
// key once, plain decimal numbers and octal flags) and hands anything else
// to dmabuf.ParseFDInfo, so the result is always what ParseFDInfo returns
// (FuzzParseFDInfoFast checks it).
func parseFDInfo(data []byte, in interner) (dmabuf.Info, error) {
	var info dmabuf.Info
	var seen [len(fdinfoKeys)]bool
	rest := data
	for len(rest) > 0 {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		k := fdinfoKey(line[:colon])
		if k < 0 {
			continue
		}
		if seen[k] {
			return dmabuf.ParseFDInfo(data) // the first line wins there
		}
		seen[k] = true
		v := line[colon+1:]
		if len(v) == 0 || v[0] != '\t' {
			return dmabuf.ParseFDInfo(data)
		}
		v = v[1:]
		switch fdinfoKeys[k] {
		case "exp_name":
			info.Exporter = in.get(v)
			continue
		case "name":
			info.Name = in.get(v)
			continue
		}
		base := uint64(10)
		if fdinfoKeys[k] == "flags" {
			base = 8
		}
		n, ok := parseUint(v, base)
		if !ok {
			return dmabuf.ParseFDInfo(data) // errors and odd spellings
		}
		switch fdinfoKeys[k] {
		case "pos":
			if n > math.MaxInt64 {
				return dmabuf.ParseFDInfo(data)
			}
			info.Pos = int64(n)
		case "flags":
			if n > math.MaxUint32 {
				return dmabuf.ParseFDInfo(data)
			}
			info.Flags = uint32(n)
		case "mnt_id":
			if n > math.MaxInt64 {
				return dmabuf.ParseFDInfo(data)
			}
			info.MntID = int64(n)
		case "ino":
			info.Inode = n
		case "size":
			if n > math.MaxInt64 {
				return dmabuf.ParseFDInfo(data)
			}
			info.Size = int64(n)
		case "count":
			if n > math.MaxInt64 {
				return dmabuf.ParseFDInfo(data)
			}
			info.Count = int64(n)
		}
	}
	return info, nil
}

// fdinfoKey returns the index of key in fdinfoKeys, or -1.
func fdinfoKey(key []byte) int {
	switch string(key) { // compiled to length and byte compares, no allocation
	case "pos":
		return 0
	case "flags":
		return 1
	case "mnt_id":
		return 2
	case "ino":
		return 3
	case "size":
		return 4
	case "count":
		return 5
	case "exp_name":
		return 6
	case "name":
		return 7
	}
	return -1
}

// parseUint parses plain digits (no sign, no blanks, no 0x) of base 8,
// 10 or 16 (either case), at most 15 of them in base 16 and 19 otherwise,
// so nothing overflows.
func parseUint(b []byte, base uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 || base == 16 && len(b) > 15 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*base + d
	}
	return n, true
}
