package daemon

import (
	"fmt"

	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/protocol"
)

// PitchAlign is the row alignment of every image layout heapd computes:
// 64 bytes suits every display and GPU engine heapd targets (the strictest
// common LINEAR rule, e.g. Raspberry Pi's HVS and v3d, and vc4's 64-byte
// pitch rule).
const PitchAlign = 64

// LinearLayout computes the layout of a single-plane image in LINEAR
// memory when no device is involved, the rule documented in
// docs/protocol.md (with devices, the heap layer aligns the pitch to the
// strictest device's rule instead):
//
//	pitch  = align(width × bytes per pixel, 64)
//	offset = 0
//	size   = pitch × height
//
// The format must be one drm knows the bytes per pixel of (XR24, AR24,
// XB24, AB24, RG16, XR30, XR48, AR48); the modifier must be LINEAR or
// INVALID ("no preference", which yields LINEAR). Anything else is a
// *protocol.Error: CodeInvalidArgument for bad dimensions, CodeNotSupported
// for formats and modifiers heapd cannot lay out yet.
func LinearLayout(img protocol.Image) (protocol.Layout, int64, error) {
	if img.Width == 0 || img.Height == 0 || img.Width > protocol.MaxDimension || img.Height > protocol.MaxDimension {
		return protocol.Layout{}, 0, protocol.Errorf(protocol.CodeInvalidArgument,
			"image %dx%d: width and height must be 1..%d", img.Width, img.Height, protocol.MaxDimension)
	}
	f := drm.Format(img.Format)
	cpp, ok := f.BytesPerPixel()
	if !ok {
		return protocol.Layout{}, 0, protocol.Errorf(protocol.CodeNotSupported,
			"pixel format %s: heapd lays out single-plane RGB formats only (%s)", f, knownFormatList())
	}
	if img.Modifier != protocol.ModifierLinear && img.Modifier != protocol.ModifierInvalid {
		return protocol.Layout{}, 0, protocol.Errorf(protocol.CodeNotSupported,
			"modifier %s: heapd allocates LINEAR images only (ask for LINEAR or INVALID)", drm.Modifier(img.Modifier))
	}
	pitch := (uint64(img.Width)*uint64(cpp) + PitchAlign - 1) / PitchAlign * PitchAlign
	size := pitch * uint64(img.Height)
	// MaxDimension² × 8 bytes fits in int64; pitch must fit the u32 field.
	if pitch > 1<<32-1 {
		return protocol.Layout{}, 0, protocol.Errorf(protocol.CodeInvalidArgument, "image %dx%d: pitch %d too large", img.Width, img.Height, pitch)
	}
	return protocol.Layout{
		Width: img.Width, Height: img.Height, Format: img.Format,
		Pitch: uint32(pitch), Offset: 0, Modifier: protocol.ModifierLinear,
	}, int64(size), nil
}

func knownFormatList() string {
	s := ""
	for _, f := range []drm.Format{drm.FormatXRGB8888, drm.FormatARGB8888, drm.FormatXBGR8888, drm.FormatABGR8888,
		drm.FormatRGB565, drm.FormatXRGB2101010, drm.FormatXRGB16161616, drm.FormatARGB16161616} {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprint(f)
	}
	return s
}
