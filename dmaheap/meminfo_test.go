package dmaheap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMeminfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want CMAStats
		err  bool
	}{
		{"vm", "MemTotal: 430336 kB\nCmaTotal:          65536 kB\nCmaFree:           65024 kB\nDirectMap2M: 1 kB\n",
			CMAStats{Present: true, Total: 64 << 20, Free: 65024 << 10}, false},
		{"no cma", "MemTotal: 430336 kB\nMemFree: 1 kB\n", CMAStats{}, false},
		{"empty", "", CMAStats{}, false},
		{"no newline at end", "CmaTotal: 4 kB\nCmaFree: 0 kB", CMAStats{Present: true, Total: 4096}, false},
		{"bytes without unit", "CmaTotal: 4096\nCmaFree: 1\n", CMAStats{Present: true, Total: 4096, Free: 1}, false},
		{"other lines ignored", "HugePages_Total: 0\n: x\nnonsense\nCmaFree: 1 kB\nCmaTotal: 2 kB\n", CMAStats{Present: true, Total: 2048, Free: 1024}, false},
		{"prefix is not the key", "CmaTotalX: 5 kB\nXCmaFree: 5 kB\n", CMAStats{}, false},
		{"only total", "CmaTotal: 4 kB\n", CMAStats{}, true},
		{"only free", "CmaFree: 4 kB\n", CMAStats{}, true},
		{"twice", "CmaTotal: 4 kB\nCmaFree: 0 kB\nCmaTotal: 4 kB\n", CMAStats{}, true},
		{"negative", "CmaTotal: -4 kB\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"plus sign", "CmaTotal: +4 kB\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"bad unit", "CmaTotal: 4 MB\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"no value", "CmaTotal:\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"extra field", "CmaTotal: 4 kB x\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"not a number", "CmaTotal: four kB\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"overflow in kB", "CmaTotal: 9223372036854775807 kB\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"overflow", "CmaTotal: 9223372036854775808\nCmaFree: 0 kB\n", CMAStats{}, true},
		{"largest kB", fmt.Sprintf("CmaTotal: %d kB\nCmaFree: 0 kB\n", int64(1<<63-1)/1024),
			CMAStats{Present: true, Total: int64(1<<63-1) / 1024 * 1024}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMeminfo([]byte(tc.in))
			if tc.err {
				if err == nil || !errors.Is(err, errMeminfo) {
					t.Fatalf("parseMeminfo = %+v, %v; want a meminfo error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseMeminfo = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestMemInfoTrees(t *testing.T) {
	cfg := loadTree(t, "linux-6.1")
	s, err := cfg.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if want := (CMAStats{Present: true, Total: 64 << 20, Free: 64 << 20}); s != want {
		t.Errorf("MemInfo = %+v, want %+v", s, want)
	}
	if got, want := s.String(), "CmaFree 64 MiB of CmaTotal 64 MiB"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	s, err = loadTree(t, "broken").MemInfo()
	if err != nil || s.Present || !strings.Contains(s.String(), "CONFIG_CMA") {
		t.Errorf("MemInfo without CMA = %+v (%s), %v", s, s, err)
	}

	_, err = treeConfig(t.TempDir()).MemInfo()
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("MemInfo with no meminfo = %v, want ErrNotExist", err)
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "proc", "meminfo"), []byte("CmaTotal: x kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := treeConfig(dir).MemInfo(); err == nil || !strings.Contains(err.Error(), "meminfo") {
		t.Errorf("MemInfo of a malformed file = %v", err)
	}
}

// The real /proc/meminfo parses on any Linux host.
func TestMemInfoHost(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo")
	}
	if _, err := MemInfo(); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte("CmaTotal:          65536 kB\nCmaFree:           65024 kB\n"))
	f.Add([]byte("MemTotal: 1 kB\n"))
	f.Add([]byte("CmaTotal: 4096\nCmaFree: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseMeminfo(data)
		if err != nil {
			if s != (CMAStats{}) {
				t.Fatalf("error %v with non-zero stats %+v", err, s)
			}
			return
		}
		if s.Total < 0 || s.Free < 0 {
			t.Fatalf("negative counters: %+v", s)
		}
		if !s.Present && (s.Total != 0 || s.Free != 0) {
			t.Fatalf("counters without CMA: %+v", s)
		}
		// What parses renders and parses again to the same values.
		if s.Present {
			again, err := parseMeminfo(fmt.Appendf(nil, "CmaTotal: %d\nCmaFree: %d\n", s.Total, s.Free))
			if err != nil || again != s {
				t.Fatalf("round trip of %+v = %+v, %v", s, again, err)
			}
		}
	})
}
