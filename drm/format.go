package drm

import (
	"fmt"
	"strconv"
	"strings"
)

// Format is a DRM pixel format, a little-endian fourcc code
// (drm/drm_fourcc.h). The zero Format means "unset" in a Layout.
type Format uint32

// fourccBigEndian is DRM_FORMAT_BIG_ENDIAN.
const fourccBigEndian = 1 << 31

// FourCC returns the Format of the four-character code a, b, c, d.
func FourCC(a, b, c, d byte) Format {
	return Format(uint32(a) | uint32(b)<<8 | uint32(c)<<16 | uint32(d)<<24)
}

// Common single-plane RGB formats (fourcc codes as constants).
const (
	FormatXRGB8888     Format = 'X' | 'R'<<8 | '2'<<16 | '4'<<24
	FormatARGB8888     Format = 'A' | 'R'<<8 | '2'<<16 | '4'<<24
	FormatXBGR8888     Format = 'X' | 'B'<<8 | '2'<<16 | '4'<<24
	FormatABGR8888     Format = 'A' | 'B'<<8 | '2'<<16 | '4'<<24
	FormatRGB565       Format = 'R' | 'G'<<8 | '1'<<16 | '6'<<24
	FormatXRGB2101010  Format = 'X' | 'R'<<8 | '3'<<16 | '0'<<24
	FormatXRGB16161616 Format = 'X' | 'R'<<8 | '4'<<16 | '8'<<24
	FormatARGB16161616 Format = 'A' | 'R'<<8 | '4'<<16 | '8'<<24
)

// knownFormats lists the formats Layout knows how to size.
func knownFormats() []Format {
	return []Format{FormatXRGB8888, FormatARGB8888, FormatXBGR8888, FormatABGR8888,
		FormatRGB565, FormatXRGB2101010, FormatXRGB16161616, FormatARGB16161616}
}

// formatInfo returns the long name and bytes per pixel of a known format.
func formatInfo(f Format) (name string, cpp uint32, ok bool) {
	switch f {
	case FormatXRGB8888:
		return "XRGB8888", 4, true
	case FormatARGB8888:
		return "ARGB8888", 4, true
	case FormatXBGR8888:
		return "XBGR8888", 4, true
	case FormatABGR8888:
		return "ABGR8888", 4, true
	case FormatRGB565:
		return "RGB565", 2, true
	case FormatXRGB2101010:
		return "XRGB2101010", 4, true
	case FormatXRGB16161616:
		return "XRGB16161616", 8, true
	case FormatARGB16161616:
		return "ARGB16161616", 8, true
	}
	return "", 0, false
}

// String returns the fourcc code ("XR24"), with "_BE" for big-endian
// variants, or the number in hex when the code is not printable.
func (f Format) String() string {
	v := uint32(f) &^ fourccBigEndian
	b := []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	for _, c := range b {
		if c < ' ' || c > '~' {
			return fmt.Sprintf("0x%08x", uint32(f))
		}
	}
	s := string(b)
	if uint32(f)&fourccBigEndian != 0 {
		s += "_BE"
	}
	return s
}

// Name returns the format's long name ("XRGB8888") when this package knows
// it, else String().
func (f Format) Name() string {
	if name, _, ok := formatInfo(f); ok {
		return name
	}
	return f.String()
}

// BytesPerPixel returns the bytes per pixel of a single-plane format this
// package knows, and false for any other format.
func (f Format) BytesPerPixel() (uint32, bool) {
	_, cpp, ok := formatInfo(f)
	return cpp, ok
}

// MarshalText returns String(), so formats read well as JSON map keys.
func (f Format) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText accepts a fourcc code ("XR24", "XR24_BE"), a known long
// name ("XRGB8888") or a number ("0x34325258").
func (f *Format) UnmarshalText(b []byte) error {
	v, err := ParseFormat(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// ParseFormat parses what Format.UnmarshalText accepts.
func ParseFormat(s string) (Format, error) {
	for _, f := range knownFormats() {
		if strings.EqualFold(s, f.Name()) {
			return f, nil
		}
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		v, err := strconv.ParseUint(s[2:], 16, 32)
		if err != nil {
			return 0, fmt.Errorf("drm: format %q: %w", s, err)
		}
		return Format(v), nil
	}
	be := strings.HasSuffix(s, "_BE")
	code := strings.TrimSuffix(s, "_BE")
	if len(code) != 4 {
		return 0, fmt.Errorf("drm: format %q: want a fourcc code like XR24, a name like XRGB8888 or 0x34325258", s)
	}
	f := FourCC(code[0], code[1], code[2], code[3])
	if be {
		f |= fourccBigEndian
	}
	return f, nil
}

// Modifier is a DRM format modifier (drm/drm_fourcc.h): the memory layout of
// a framebuffer. Its top byte names the vendor.
type Modifier uint64

// Well-known modifiers.
const (
	// ModLinear is DRM_FORMAT_MOD_LINEAR: rows one after another.
	ModLinear Modifier = 0
	// ModInvalid is DRM_FORMAT_MOD_INVALID: "no explicit modifier"; in a
	// Layout it means ADDFB2 without DRM_MODE_FB_MODIFIERS (the driver's
	// implicit layout).
	ModInvalid Modifier = 0x00ffffffffffffff
)

// modVendor returns the name of DRM_FORMAT_MOD_VENDOR_* code v, or "".
func modVendor(v uint8) string {
	names := [...]string{"NONE", "INTEL", "AMD", "NVIDIA", "SAMSUNG", "QCOM", "VIVANTE", "BROADCOM", "ARM", "ALLWINNER", "AMLOGIC", "MTK", "APPLE"}
	if int(v) < len(names) {
		return names[v]
	}
	return ""
}

// Vendor returns the modifier's vendor code (the top byte).
func (m Modifier) Vendor() uint8 { return uint8(m >> 56) }

// String returns "LINEAR", "INVALID", or "VENDOR:0x<16 hex digits>".
func (m Modifier) String() string {
	switch m {
	case ModLinear:
		return "LINEAR"
	case ModInvalid:
		return "INVALID"
	}
	if v := modVendor(m.Vendor()); v != "" {
		return fmt.Sprintf("%s:0x%016x", v, uint64(m))
	}
	return fmt.Sprintf("0x%016x", uint64(m))
}

// MarshalText returns String().
func (m Modifier) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText accepts what String returns and plain hex numbers.
func (m *Modifier) UnmarshalText(b []byte) error {
	v, err := ParseModifier(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseModifier parses what Modifier.UnmarshalText accepts.
func ParseModifier(s string) (Modifier, error) {
	switch strings.ToUpper(s) {
	case "LINEAR":
		return ModLinear, nil
	case "INVALID":
		return ModInvalid, nil
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[i+1:]
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("drm: modifier %q: want LINEAR, INVALID or a hex number: %w", s, err)
	}
	return Modifier(v), nil
}
