package udmabuf

import (
	"math"
	"testing"
)

func TestParseLimits(t *testing.T) {
	for _, tc := range []struct {
		size, list string
		want       Limits
	}{
		{"64\n", "1024\n", Limits{MaxSize: 64 << 20, MaxRanges: 1024}},
		{"", "", Limits{MaxSize: DefaultSizeLimit, MaxRanges: DefaultListLimit}},
		{"16", "8", Limits{MaxSize: 16 << 20, MaxRanges: 8}},
		{"0", "-1", Limits{MaxSize: DefaultSizeLimit, MaxRanges: DefaultListLimit}},
		{"9223372036854775807", "2147483648", Limits{MaxSize: DefaultSizeLimit, MaxRanges: DefaultListLimit}},
		{"x", "1e3", Limits{MaxSize: DefaultSizeLimit, MaxRanges: DefaultListLimit}},
	} {
		if got := parseLimits([]byte(tc.size), []byte(tc.list)); got != tc.want {
			t.Errorf("parseLimits(%q, %q) = %+v, want %+v", tc.size, tc.list, got, tc.want)
		}
	}
}

// FuzzParseLimits: whatever the module parameters say, the limits are
// positive and MaxSize is a whole number of MiB (no overflow).
func FuzzParseLimits(f *testing.F) {
	f.Add([]byte("64\n"), []byte("1024\n"))
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("8796093022207"), []byte("2147483647"))
	f.Add([]byte("8796093022208"), []byte("2147483648"))
	f.Add([]byte("-64"), []byte("0"))
	f.Add([]byte(" 64 \t"), []byte("+5"))
	f.Fuzz(func(t *testing.T, size, list []byte) {
		l := parseLimits(size, list)
		if l.MaxSize <= 0 || l.MaxSize%(1<<20) != 0 || l.MaxRanges <= 0 || int64(l.MaxRanges) > math.MaxInt32 {
			t.Fatalf("parseLimits(%q, %q) = %+v", size, list, l)
		}
	})
}
