package drm

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// FormatModifiers maps each pixel format a plane accepts to the modifiers it
// accepts that format with, in the order the kernel lists them. A format the
// plane lists without any modifier maps to an empty slice.
type FormatModifiers map[Format][]Modifier

// Supports reports whether format f is accepted with modifier m. Safe on a
// nil map (false).
func (fm FormatModifiers) Supports(f Format, m Modifier) bool {
	return slices.Contains(fm[f], m)
}

// Formats returns the formats in ascending numeric order.
func (fm FormatModifiers) Formats() []Format {
	out := make([]Format, 0, len(fm))
	for f := range fm {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// IN_FORMATS blob layout (struct drm_format_modifier_blob and
// struct drm_format_modifier, drm/drm_mode.h), in host byte order.
const (
	inFormatsVersion    = 1  // FORMAT_BLOB_CURRENT
	inFormatsHeaderSize = 24 // version, flags, count_formats, formats_offset, count_modifiers, modifiers_offset
	inFormatsModSize    = 24 // u64 formats bitmask; u32 offset; u32 pad; u64 modifier
)

// ParseInFormats decodes the IN_FORMATS property blob of a plane into
// format → modifiers. Entry i of the modifier array says, by bit j of its
// 64-bit mask, that formats[offset+j] supports its modifier.
//
// It never panics and never allocates more than the blob justifies; any
// inconsistency (short blob, version other than 1, an array or a mask bit
// past the end) is an error wrapping ErrBadBlob. It retains nothing from b.
// Safe for concurrent use.
func ParseInFormats(b []byte) (FormatModifiers, error) {
	if len(b) < inFormatsHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrBadBlob, len(b), inFormatsHeaderSize)
	}
	ne := binary.NativeEndian
	version := ne.Uint32(b[0:])
	countFormats := uint64(ne.Uint32(b[8:]))
	formatsOffset := uint64(ne.Uint32(b[12:]))
	countMods := uint64(ne.Uint32(b[16:]))
	modsOffset := uint64(ne.Uint32(b[20:]))
	if version != inFormatsVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadBlob, version, inFormatsVersion)
	}
	size := uint64(len(b))
	if formatsOffset > size || countFormats > (size-formatsOffset)/4 {
		return nil, fmt.Errorf("%w: %d formats at offset %d overrun the %d-byte blob", ErrBadBlob, countFormats, formatsOffset, size)
	}
	if modsOffset > size || countMods > (size-modsOffset)/inFormatsModSize {
		return nil, fmt.Errorf("%w: %d modifiers at offset %d overrun the %d-byte blob", ErrBadBlob, countMods, modsOffset, size)
	}
	formats := make([]Format, countFormats)
	out := make(FormatModifiers, countFormats)
	for i := range formats {
		formats[i] = Format(ne.Uint32(b[formatsOffset+uint64(i)*4:]))
		if _, ok := out[formats[i]]; !ok {
			out[formats[i]] = []Modifier{}
		}
	}
	type pair struct {
		f Format
		m Modifier
	}
	seen := map[pair]bool{}
	for i := range countMods {
		e := b[modsOffset+i*inFormatsModSize:]
		mask := ne.Uint64(e[0:])
		offset := uint64(ne.Uint32(e[8:]))
		mod := Modifier(ne.Uint64(e[16:]))
		for j := uint64(0); mask != 0; j, mask = j+1, mask>>1 {
			if mask&1 == 0 {
				continue
			}
			idx := offset + j
			if idx >= countFormats {
				return nil, fmt.Errorf("%w: modifier entry %d (%v) refers to format index %d of %d", ErrBadBlob, i, mod, idx, countFormats)
			}
			f := formats[idx]
			if !seen[pair{f, mod}] {
				seen[pair{f, mod}] = true
				out[f] = append(out[f], mod)
			}
		}
	}
	return out, nil
}
