package units

import (
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"4096", 4096, ""},
		{"4KiB", 4096, ""},
		{"4K", 4096, ""},
		{"8MiB", 8 << 20, ""},
		{" 8 MiB ", 8 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"1.5MiB", 3 << 19, ""},
		{"0", 0, ""},
		{"12B", 12, ""},
		{"", 0, "empty"},
		{"-1", 0, "negative"},
		{"4KB", 0, "decimal"},
		{"4mb", 0, "decimal"},
		{"MiB", 0, "missing number"},
		{"abc", 0, "not a number"},
		{"1.3B", 0, "whole number"},
		{"9223372036854775807", 9223372036854775807, ""},
		{"9223372036854775808", 0, "too large"},
		{"8388608TiB", 0, "too large"},
		{"NaNKiB", 0, "not a number"},
	} {
		got, err := ParseSize(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0 B"}, {4096, "4 KiB"}, {3 << 19, "1.5 MiB"}, {4097, "4097 B"}, {64 << 20, "64 MiB"}, {-3, "-3 B"},
	} {
		if got := FormatSize(tc.in); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4096", "4KiB", "1.5MiB", "-1", "", "9e99GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err == nil && v < 0 {
			t.Fatalf("ParseSize(%q) = %d without error", s, v)
		}
	})
}
