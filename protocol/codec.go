package protocol

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// enc appends little-endian fields to a byte slice.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// str appends a u16 length and the bytes. The encoder checks limits
// before calling it (validate), so a too-long string is a programming error
// caught there.
func (e *enc) str(s string) {
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// dec reads little-endian fields; the first failure sticks and every later
// read returns zero values, so a decoder is a straight list of reads with
// one error check at the end.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail("%s at body offset %d: need %d bytes, %d left", what, d.off, n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *dec) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16(what string) uint16 {
	if p := d.take(2, what); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// str reads a u16-length string of at most max bytes, valid UTF-8 without
// NUL (so C clients can treat strings as C strings).
func (d *dec) str(what string, max int) string {
	n := int(d.u16(what + " length"))
	if d.err != nil {
		return ""
	}
	if n > max {
		d.fail("%s: %d bytes, at most %d allowed", what, n, max)
		return ""
	}
	p := d.take(n, what)
	if d.err != nil {
		return ""
	}
	s := string(p)
	if err := checkString(s); err != nil {
		d.fail("%s: %v", what, err)
		return ""
	}
	return s
}

// count reads a u16 element count and checks it against max and against
// the bytes left (each element needs at least minSize bytes), so a hostile
// count cannot make the decoder allocate more than the packet holds.
func (d *dec) count(what string, max, minSize int) int {
	n := int(d.u16(what))
	if d.err != nil {
		return 0
	}
	if n > max {
		d.fail("%s: %d, at most %d allowed", what, n, max)
		return 0
	}
	if n*minSize > len(d.b)-d.off {
		d.fail("%s: %d elements cannot fit in the %d bytes left", what, n, len(d.b)-d.off)
		return 0
	}
	return n
}

// end fails if bytes are left over.
func (d *dec) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes after the last field", len(d.b)-d.off)
	}
	return d.err
}

// checkString is the rule every string field follows.
func checkString(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("contains a NUL byte")
	}
	return nil
}

// checkStr validates a string field before encoding.
func checkStr(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s: %d bytes, at most %d allowed", ErrMalformed, what, len(s), max)
	}
	if err := checkString(s); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return nil
}
