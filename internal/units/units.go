package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var suffixes = []struct {
	s     string
	shift uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
	{"K", 10}, {"M", 20}, {"G", 30}, {"T", 40},
	{"B", 0},
}

// ParseSize parses a byte size such as "4096", "4KiB", "8MiB" or "1.5MiB"
// (fractions must come out as whole bytes). It returns an error that says
// what was wrong for empty, negative, malformed, decimal-suffixed or
// overflowing input.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("size %q: empty; give bytes or a binary suffix, e.g. 4096, 4KiB, 8MiB", s)
	}
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("size %q: negative sizes make no sense", s)
	}
	num, shift := in, uint(0)
	for _, suf := range suffixes {
		if strings.HasSuffix(in, suf.s) {
			num, shift = strings.TrimSpace(strings.TrimSuffix(in, suf.s)), suf.shift
			break
		}
	}
	if strings.HasSuffix(strings.ToUpper(in), "KB") || strings.HasSuffix(strings.ToUpper(in), "MB") || strings.HasSuffix(strings.ToUpper(in), "GB") {
		if !strings.HasSuffix(in, "iB") {
			return 0, fmt.Errorf("size %q: decimal units are not accepted; use KiB, MiB or GiB (powers of 1024)", s)
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q: missing number before the unit", s)
	}
	if v, err := strconv.ParseUint(num, 10, 64); err == nil {
		if v > math.MaxInt64>>shift {
			return 0, fmt.Errorf("size %q: too large (at most %d bytes)", s, int64(math.MaxInt64))
		}
		return int64(v << shift), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("size %q: not a number with an optional unit; e.g. 4096, 4KiB, 8MiB", s)
	}
	v := f * float64(uint64(1)<<shift)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large (at most %d bytes)", s, int64(math.MaxInt64))
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q: is not a whole number of bytes", s)
	}
	return int64(v), nil
}

// FormatSize renders n bytes with the largest binary unit that keeps it
// exact to one decimal ("4 KiB", "1.5 MiB", "4097 B").
func FormatSize(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for i < len(units)-1 && n >= 1<<(10*(i+1)) {
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	unit := int64(1) << (10 * i)
	if n%unit == 0 {
		return fmt.Sprintf("%d %s", n/unit, units[i])
	}
	if (n*10)%unit == 0 {
		return fmt.Sprintf("%.1f %s", float64(n)/float64(unit), units[i])
	}
	return fmt.Sprintf("%d B", n)
}
