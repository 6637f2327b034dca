package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/heapd/heapd/scan"
)

// topRoot runs `heapctl <args>` with top registered, as run does once
// top is on its AddCommand line.
func topRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb}
	root := &cobra.Command{Use: "heapctl", SilenceUsage: true, SilenceErrors: true}
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "")
	root.PersistentFlags().StringVar(&g.root, "root", "", "")
	root.AddCommand(topCmd(g))
	err := root.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

// topTree writes a small system under a --root: pid 100 "camera" holds a
// 1 MiB system buffer (2 fds, 1 mapping) shared with pid 200 "viewer",
// and maps a reserved buffer it closed.
func topTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fdinfo := func(ino, size int, exp, name string) []byte {
		return fmt.Appendf(nil, "pos:\t0\nflags:\t02000002\nmnt_id:\t8\nino:\t%d\nsize:\t%d\ncount:\t3\nexp_name:\t%s\nname:\t%s\n", ino, size, exp, name)
	}
	files := map[string][]byte{
		"proc/meminfo":                    []byte("CmaTotal:          65536 kB\nCmaFree:           32768 kB\n"),
		"proc/100/comm":                   []byte("camera\n"),
		"proc/100/fdinfo/5":               fdinfo(1, 1<<20, "system", "frames"),
		"proc/100/fdinfo/6":               fdinfo(1, 1<<20, "system", "frames"),
		"proc/100/maps":                   []byte("7f00000-7f01000 rw-s 00000000 00:07 1  /dmabuf:frames\n7f10000-7f30000 rw-s 00000000 00:07 2  /dmabuf:\x1b[31mred\n"),
		"proc/200/comm":                   []byte("viewer\n"),
		"proc/200/fdinfo/9":               fdinfo(1, 1<<20, "system", "frames"),
		"proc/200/maps":                   []byte(""),
		"sys/class/dma_heap/system/dev":   []byte("254:0\n"),
		"sys/class/dma_heap/reserved/dev": []byte("254:1\n"),
		"dev/dma_heap/system":             []byte("254:0\n"),
		"dev/dma_heap/reserved":           []byte("254:1\n"),
	}
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTopOnceJSON(t *testing.T) {
	out, err := topRoot(t, "--root", topTree(t), "top", "--once", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		Buffers   []scan.Buffer
		Processes []scan.Process
		Heaps     []scan.Heap
		Stats     scan.Stats
		Notes     []string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Buffers) != 2 || got.Buffers[0].Inode != 1 || len(got.Buffers[0].Holders) != 2 {
		t.Errorf("buffers %+v", got.Buffers)
	}
	var pids []int
	for _, p := range got.Processes {
		pids = append(pids, p.PID)
	}
	if diff := cmp.Diff([]int{100, 200}, pids); diff != "" {
		t.Errorf("processes by share (-want +got):\n%s", diff)
	}
	if got.Stats.Processes != 2 || len(got.Heaps) < 2 {
		t.Errorf("stats %+v heaps %+v", got.Stats, got.Heaps)
	}
	if len(got.Notes) != 1 || !strings.Contains(got.Notes[0], "bufinfo") {
		t.Errorf("notes %q: want the one about bufinfo", got.Notes)
	}
}

func TestTopOnceTables(t *testing.T) {
	root := topTree(t)
	for _, tc := range []struct {
		view string
		want []string
	}{
		{"p", []string{"PID", "camera", "640 KiB", "1.1 MiB", "viewer", "512 KiB"}},
		{"buffers", []string{"INODE", "frames", "camera[100] 2fd 1map, viewer[200] 1fd", "≥128 KiB", "?[31mred"}},
		{"h", []string{"HEAP", "reserved", "contiguous", "heap, contiguous", "32 MiB / 64 MiB", "system", "1 MiB"}},
	} {
		t.Run(tc.view, func(t *testing.T) {
			out, err := topRoot(t, "--root", root, "top", "--once", "--view", tc.view)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in\n%s", w, out)
				}
			}
			if strings.Contains(out, "\x1b") {
				t.Errorf("an escape sequence from a buffer name reached the output:\n%q", out)
			}
			if !strings.Contains(out, "note: attached devices unknown") {
				t.Errorf("no note on bufinfo in\n%s", out)
			}
		})
	}
}

// Not a terminal: one table per interval, -n of them.
func TestTopBatch(t *testing.T) {
	out, err := topRoot(t, "--root", topTree(t), "top", "-n", "2", "-d", "10ms", "--view", "h")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := strings.Count(out, "HEAP "); n != 2 {
		t.Errorf("%d tables, want 2:\n%s", n, out)
	}
	if strings.Contains(out, escAltScreen) {
		t.Errorf("terminal sequences written to a non-terminal:\n%q", out)
	}
}

func TestTopFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"top", "-o", "json"},
		{"top", "--once", "--view", "x"},
		{"top", "--once", "-o", "yaml"},
		{"top", "-d", "0s"},
	} {
		if out, err := topRoot(t, args...); err == nil {
			t.Errorf("%q: no error\n%s", args, out)
		}
	}
}

func testSnapshot(n int) *scan.Snapshot {
	s := &scan.Snapshot{Time: time.Now(), Stats: scan.Stats{Processes: n, Bufinfo: true}}
	for i := range n {
		b := scan.Buffer{Inode: uint64(i + 1), Size: int64(n-i) << 12, Exporter: "system", Name: strings.Repeat("long-name-", 10),
			Holders: []scan.Holder{{PID: 1000 + i, Comm: "proc", FDs: 1, Share: int64(n-i) << 12}}}
		s.Buffers = append(s.Buffers, b)
		s.Processes = append(s.Processes, scan.Process{PID: 1000 + i, Comm: "proc", Buffers: 1, FDs: 1, Bytes: b.Size, Share: b.Size})
	}
	s.Heaps = []scan.Heap{{Name: "system", HeapdName: "system", Heap: true, Buffers: n}}
	return s
}

// A frame never has more lines than the terminal has rows, nor longer
// ones than it has columns.
func TestFrameFits(t *testing.T) {
	s := testSnapshot(100)
	s.Stats.Unreadable = 3
	for _, view := range []topView{viewProcesses, viewBuffers, viewHeaps} {
		for _, size := range [][2]int{{80, 24}, {40, 10}, {200, 60}, {10, 3}} {
			f := string(frame(s, nil, view, true, size[0], size[1]))
			lines := strings.Split(f, "\r\n")
			if len(lines) > max(size[1], 5) {
				t.Errorf("%v %dx%d: %d lines", view, size[0], size[1], len(lines))
			}
			for _, l := range lines {
				for _, esc := range []string{escHome, escClearEOL, escClearDown, escBold, escReset} {
					l = strings.ReplaceAll(l, esc, "")
				}
				if n := utf8.RuneCountInString(l); n > max(size[0], 20) {
					t.Errorf("%v %dx%d: line of %d columns: %q", view, size[0], size[1], n, l)
				}
			}
			if size == [2]int{80, 24} && !strings.Contains(f, "3 processes unreadable: run as root") {
				t.Errorf("%v: no unreadable note in\n%s", view, f)
			}
		}
	}
}

// Keys switch views and q quits; a failing scan is shown, not fatal.
func TestRunLiveKeys(t *testing.T) {
	keys := make(chan byte, 8)
	var out bytes.Buffer
	scans := 0
	scanner := func(ctx context.Context) (*scan.Snapshot, error) {
		scans++
		if scans == 2 {
			return nil, fmt.Errorf("scan %d failed", scans)
		}
		return testSnapshot(3), nil
	}
	for _, k := range []byte{'b', 'x', 'h', ' ', 'p', 'q'} {
		keys <- k
	}
	tio := liveIO{out: &out, keys: keys, size: func() (int, int) { return 100, 30 }}
	done := make(chan error, 1)
	go func() { done <- runLive(context.Background(), tio, scanner, viewProcesses, time.Hour) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("q did not quit")
	}
	frames := strings.Split(out.String(), escHome)[1:]
	var views []string
	for _, f := range frames {
		switch {
		case strings.Contains(f, "INODE"):
			views = append(views, "b")
		case strings.Contains(f, "CMA FREE"):
			views = append(views, "h")
		case strings.Contains(f, "PID"):
			views = append(views, "p")
		}
	}
	// Unknown keys draw nothing; space rescans (the failing scan) and
	// redraws the heaps with the old snapshot.
	if diff := cmp.Diff([]string{"p", "b", "h", "h", "p"}, views); diff != "" {
		t.Errorf("views drawn (-want +got):\n%s", diff)
	}
	if !strings.Contains(frames[3], "last scan failed, showing the one before: scan 2 failed") {
		t.Errorf("failed scan not shown:\n%q", frames[3])
	}
}

// Cancelling (^C through the signal context) ends the live view; so does
// nothing else when there is no keyboard.
func TestRunLiveCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	tio := liveIO{out: &out, size: func() (int, int) { return 80, 24 }}
	done := make(chan error, 1)
	go func() {
		done <- runLive(ctx, tio, func(context.Context) (*scan.Snapshot, error) { return testSnapshot(1), nil }, viewHeaps, time.Millisecond)
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not end the live view")
	}
	if !strings.Contains(out.String(), "stdin is not a terminal: ^C quits") {
		t.Errorf("no hint that ^C quits:\n%q", out.String())
	}
}

func TestTopSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 1179648: "1.1 MiB",
		1<<20 - 1: "1 MiB", 3 << 30: "3 GiB", 1<<62 + 1<<61: "6 EiB",
	} {
		if got := topSize(n); got != want {
			t.Errorf("topSize(%d) = %q, want %q", n, got, want)
		}
	}
}
