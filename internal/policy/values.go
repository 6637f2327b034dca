package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/heapd/heapd/internal/units"
)

// Size is a byte count in the policy file: an integer, or a string with
// a binary unit ("64MiB").
type Size uint64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := units.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// String renders s with units.FormatSize.
func (s Size) String() string { return units.FormatSize(int64(min(uint64(s), math.MaxInt64))) }

// Duration is a time span in the policy file: a Go duration string
// ("250ms", "2s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, e.g. 250ms, 1s, 2m", b)
	}
	if v <= 0 {
		return fmt.Errorf("duration %q: must be positive", b)
	}
	*d = Duration(v)
	return nil
}

// Rate is an allocation rate: N buffers per period, with bursts of up to
// N. Written "20/s", "100/m", "5/250ms" or "600/1h".
type Rate struct {
	N   int
	Per time.Duration
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Rate) UnmarshalText(b []byte) error {
	s := string(b)
	num, per, ok := strings.Cut(s, "/")
	if !ok {
		return fmt.Errorf("rate %q: want buffers per period, e.g. \"20/s\", \"100/m\", \"5/250ms\"", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 || n > 1_000_000 {
		return fmt.Errorf("rate %q: the count must be a whole number from 1 to 1000000", s)
	}
	per = strings.TrimSpace(per)
	var d time.Duration
	switch per {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		d, err = time.ParseDuration(per)
		if err != nil || d <= 0 {
			return fmt.Errorf("rate %q: the period must be s, m, h or a duration such as 250ms", s)
		}
	}
	if d < time.Millisecond || d > 24*time.Hour {
		return fmt.Errorf("rate %q: the period must be from 1ms to 24h", s)
	}
	r.N, r.Per = n, d
	return nil
}

// String renders r as it is written.
func (r Rate) String() string {
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// Pattern is a heap name pattern: "*" matches any run of characters
// (slashes included, so "scanout*" covers scanout and every
// scanout/<device>), "?" one character; everything else matches itself.
type Pattern string

// UnmarshalText implements encoding.TextUnmarshaler: it checks the
// pattern.
func (p *Pattern) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		return fmt.Errorf("heap pattern is empty")
	}
	if len(s) > 255 {
		return fmt.Errorf("heap pattern %.20q...: longer than 255 bytes", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._,+-/:@*?", c) >= 0:
		default:
			return fmt.Errorf("heap pattern %q: character %q is not allowed (heap names use letters, digits and ._,+-/:@; * and ? are wildcards)", s, c)
		}
	}
	*p = Pattern(s)
	return nil
}

// Match reports whether name matches p.
func (p Pattern) Match(name string) bool {
	return globMatch(string(p), name)
}

// globMatch matches with * (any run, possibly empty) and ? (one byte),
// iteratively with single-star backtracking: linear in practice, never
// exponential.
func globMatch(pat, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pat) && pat[px] == '*':
			starP, starS = px, sx
			px++
		case px < len(pat) && (pat[px] == '?' || pat[px] == s[sx]):
			px++
			sx++
		case starP >= 0:
			starS++
			px, sx = starP+1, starS
		default:
			return false
		}
	}
	for px < len(pat) && pat[px] == '*' {
		px++
	}
	return px == len(pat)
}

// SessionMode is the value of a rule's session key.
type SessionMode string

// Session modes.
const (
	// SessionActive: the uid has an active local logind session, on a
	// seat or not.
	SessionActive SessionMode = "active"
	// SessionSeat: the uid has an active local logind session on a seat
	// (at the physical console).
	SessionSeat SessionMode = "seat"
)

// UnmarshalText implements encoding.TextUnmarshaler: it checks the mode.
func (m *SessionMode) UnmarshalText(b []byte) error {
	switch SessionMode(b) {
	case SessionActive, SessionSeat:
		*m = SessionMode(b)
		return nil
	}
	return fmt.Errorf("session %q: want \"active\" (an active local session, seat or not) or \"seat\" (an active local session on a seat)", b)
}

// The TOML decoder assigns strings to string-kinded types directly; these
// wrappers make it call UnmarshalText, so bad values get their line.
type (
	patternValue struct{ p Pattern }
	sessionValue struct{ m SessionMode }
)

func (v *patternValue) UnmarshalText(b []byte) error { return v.p.UnmarshalText(b) }
func (v *sessionValue) UnmarshalText(b []byte) error { return v.m.UnmarshalText(b) }
