package scan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeTree lays out a proc, sys, dev and debugfs tree under dir from a
// kernel capture:
//
//	pid 100 "capture"  every fd of the capture, its maps (a memfd too)
//	pid 200 "viewer"   a second fd for the 1 MiB system buffer (inode 1)
//	pid 300            gone: its directory has no fdinfo any more
//	pid 400 "mapper"   no fds, one mapping of a buffer nobody else shows (77)
//
// and heaps system and reserved with 64 MiB of CMA, 60 MiB free.
func fakeTree(t *testing.T, kernel string) *Config {
	t.Helper()
	return fakeTreeIn(t, kernel, t.TempDir())
}

// fakeTreeIn lays out fakeTree's tree in dir.
func fakeTreeIn(t *testing.T, kernel, dir string) *Config {
	t.Helper()
	c := readCapture(t, kernel)
	files := map[string][]byte{
		"proc/meminfo":                    []byte("MemTotal:        1000000 kB\nCmaTotal:          65536 kB\nCmaFree:           61440 kB\n"),
		"proc/100/comm":                   []byte("capture\n"),
		"proc/100/maps":                   c["maps"],
		"proc/100/fdinfo/0":               c["fdinfo/memfd"],
		"proc/100/fdinfo/3":               c["fdinfo/system-1m-dup"],
		"proc/100/fdinfo/4":               c["fdinfo/system-1m"],
		"proc/100/fdinfo/7":               c["fdinfo/reserved-2m"],
		"proc/100/fdinfo/8":               c["fdinfo/system-unnamed"],
		"proc/100/fdinfo/9":               c["fdinfo/system-odd-name"],
		"proc/100/fdinfo/12":              c["fdinfo/udmabuf-64k"],
		"proc/100/fdinfo/13":              c["fdinfo/vgem-export"],
		"proc/200/comm":                   []byte("viewer\n"),
		"proc/200/maps":                   []byte("00400000-00401000 r-xp 00000000 08:01 5    /usr/bin/viewer\n"),
		"proc/200/fdinfo/5":               c["fdinfo/system-1m"],
		"proc/300/comm":                   []byte("gone\n"),
		"proc/400/comm":                   []byte("mapper\n"),
		"proc/400/maps":                   []byte("7f00000-7f03000 r--s 00000000 00:07 77   /dmabuf:orphan\n"),
		"sys/class/dma_heap/system/dev":   []byte("254:0\n"),
		"sys/class/dma_heap/reserved/dev": []byte("254:1\n"),
		"dev/dma_heap/system":             []byte("254:0\n"),
		"dev/dma_heap/reserved":           []byte("254:1\n"),
		"debug/dma_buf/bufinfo":           c["bufinfo"],
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
	for _, d := range []string{"proc/400/fdinfo", "proc/self"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &Config{
		ProcDir:    filepath.Join(dir, "proc"),
		SysDir:     filepath.Join(dir, "sys"),
		DevDir:     filepath.Join(dir, "dev"),
		DebugFSDir: filepath.Join(dir, "debug"),
	}
}

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

var ignoreRuntime = cmpopts.IgnoreFields(Snapshot{}, "Time", "Stats.Duration")

func TestScanTree(t *testing.T) {
	uid := uint32(os.Getuid())
	for _, k := range kernels {
		t.Run(k, func(t *testing.T) {
			testScanTree(t, fakeTree(t, k), uid)
		})
	}
}

func testScanTree(t *testing.T, cfg *Config, uid uint32) {
	got, err := Scan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	capture := func(fds, maps int, mapped, share int64) Holder {
		return Holder{PID: 100, Comm: "capture", FDs: fds, Maps: maps, Mapped: mapped, Share: share}
	}
	want := &Snapshot{
		Buffers: []Buffer{
			{Inode: 2, Size: 2 * mib, Exporter: "reserved", Name: "cap-reserved", Count: 2, Devices: []string{},
				Fences:  []string{"write fence:sw_sync scan.test seq 1 unsignalled"},
				Holders: []Holder{capture(1, 1, 2*mib, 2*mib)}},
			{Inode: 1, Size: mib, Exporter: "system", Name: "cap-system", Count: 10, Devices: []string{"vkms", "vgem"},
				Holders: []Holder{capture(2, 2, 2*mib, mib/2), {PID: 200, Comm: "viewer", FDs: 1, Share: mib / 2}}},
			{Inode: 5, Size: 64 * kib, Exporter: "udmabuf", Name: "cap-udmabuf", Count: 2, Devices: []string{},
				Holders: []Holder{capture(1, 1, 64*kib, 64*kib)}},
			{Inode: 6, Size: 16 * kib, Exporter: "drm", Count: 4, Devices: []string{},
				Holders: []Holder{capture(1, 1, 16*kib, 16*kib)}},
			{Inode: 77, Size: 12 * kib, SizeEstimated: true, Name: "orphan",
				Holders: []Holder{{PID: 400, Comm: "mapper", Maps: 1, Mapped: 12 * kib, Share: 12 * kib}}},
			{Inode: 4, Size: 8 * kib, Exporter: "system", Name: "a b:c", Count: 2, Devices: []string{},
				Holders: []Holder{capture(1, 1, 8*kib, 8*kib)}},
			{Inode: 3, Size: 4 * kib, Exporter: "system", Count: 1, Devices: []string{},
				Holders: []Holder{capture(1, 0, 0, 4*kib)}},
		},
		Processes: []Process{
			{PID: 100, Comm: "capture", UID: uid, Buffers: 6, FDs: 7, Maps: 6, Mapped: 2*mib + 2*mib + 64*kib + 16*kib + 8*kib,
				Bytes: 3*mib + 92*kib, Share: 2*mib + mib/2 + 92*kib},
			{PID: 200, Comm: "viewer", UID: uid, Buffers: 1, FDs: 1, Bytes: mib, Share: mib / 2},
			{PID: 400, Comm: "mapper", UID: uid, Buffers: 1, Maps: 1, Mapped: 12 * kib, Bytes: 12 * kib, Share: 12 * kib},
		},
		Heaps: []Heap{
			{Name: "reserved", HeapdName: "contiguous", Heap: true, Contiguous: true, Buffers: 1, Bytes: 2 * mib,
				CMATotal: 64 * mib, CMAFree: 60 * mib},
			{Name: "system", HeapdName: "system", Heap: true, Buffers: 3, Bytes: mib + 12*kib},
			{Name: "udmabuf", Buffers: 1, Bytes: 64 * kib},
			{Name: "drm", Buffers: 1, Bytes: 16 * kib},
			{Name: "", Buffers: 1, Bytes: 12 * kib},
		},
		Stats: Stats{Processes: 4, Vanished: 1, Bufinfo: true, AsRoot: os.Geteuid() == 0},
	}
	if diff := cmp.Diff(want, got, ignoreRuntime, cmpopts.IgnoreFields(Process{}, "User")); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	var shares, held int64
	for _, p := range got.Processes {
		shares += p.Share
	}
	for _, b := range got.Buffers {
		if len(b.Holders) > 0 {
			held += b.Size
		}
	}
	if shares != held {
		t.Errorf("shares add up to %d, held buffers to %d", shares, held)
	}
	if notes := got.Notes(); len(notes) != 0 {
		t.Errorf("notes %q, want none", notes)
	}
}

// Without bufinfo, buffers are known from fdinfo and maps alone: no
// devices, and the fdinfo count.
func TestScanTreeNoBufinfo(t *testing.T) {
	cfg := fakeTree(t, "linux-6.12")
	cfg.NoBufinfo = true
	got, err := Scan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.Bufinfo || !got.Stats.BufinfoSkipped || len(got.Buffers) != 7 {
		t.Fatalf("bufinfo %v skipped %v, %d buffers; want false, true, 7", got.Stats.Bufinfo, got.Stats.BufinfoSkipped, len(got.Buffers))
	}
	for _, b := range got.Buffers {
		if b.Devices != nil || b.Fences != nil {
			t.Errorf("inode %d: devices %q fences %q without bufinfo", b.Inode, b.Devices, b.Fences)
		}
	}
	if notes := got.Notes(); len(notes) != 0 {
		t.Errorf("notes %q, want none: bufinfo was skipped on purpose", notes)
	}
	cfg.NoBufinfo = false
	cfg.DebugFSDir = filepath.Join(t.TempDir(), "not-mounted")
	if got, err = Scan(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if notes := got.Notes(); len(notes) != 1 || !strings.Contains(notes[0], "bufinfo") {
		t.Errorf("notes %q, want one about bufinfo", notes)
	}
}

func TestScanLedger(t *testing.T) {
	cfg := fakeTree(t, "linux-6.1")
	cfg.Ledger = LedgerFunc(func(ctx context.Context) (map[uint64]Owner, error) {
		return map[uint64]Owner{2: {Client: "camera", PID: 42, Heap: "contiguous"}, 999: {Client: "gone"}}, nil
	})
	got, err := Scan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Stats.Ledger {
		t.Error("Stats.Ledger false")
	}
	for _, b := range got.Buffers {
		want := (*Owner)(nil)
		if b.Inode == 2 {
			want = &Owner{Client: "camera", PID: 42, Heap: "contiguous"}
		}
		if diff := cmp.Diff(want, b.Owner); diff != "" {
			t.Errorf("inode %d owner (-want +got):\n%s", b.Inode, diff)
		}
	}

	cfg.Ledger = LedgerFunc(func(ctx context.Context) (map[uint64]Owner, error) {
		return nil, errors.New("heapd not running")
	})
	got, err = Scan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.Ledger || len(got.Problems) != 1 || !strings.Contains(got.Problems[0], "heapd not running") {
		t.Errorf("ledger %v, problems %q; want false and the ledger's error", got.Stats.Ledger, got.Problems)
	}
}

// Processes this user may not read are counted, and said once.
func TestScanUnreadable(t *testing.T) {
	root := os.Geteuid() == 0
	cfg := fakeTreeIn(t, "linux-6.1", publicTempDir(t))
	if err := os.Chmod(filepath.Join(cfg.ProcDir, "200", "fdinfo"), 0o700); err != nil {
		t.Fatal(err)
	}
	var got *Snapshot
	if root {
		got = scanAs(t, nobody, *cfg)
	} else {
		if err := os.Chmod(filepath.Join(cfg.ProcDir, "200", "fdinfo"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(filepath.Join(cfg.ProcDir, "200", "fdinfo"), 0o700) })
		var err error
		if got, err = Scan(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	// As nobody, or as a user whose chmod 0 binds: not as root either way.
	if diff := cmp.Diff(Stats{Processes: 4, Unreadable: 1, Vanished: 1, Bufinfo: true}, got.Stats,
		cmpopts.IgnoreFields(Stats{}, "Duration")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if notes := got.Notes(); len(notes) != 1 || notes[0] != "1 process unreadable: run as root" {
		t.Errorf("notes %q", notes)
	}
	for _, b := range got.Buffers {
		for _, h := range b.Holders {
			if h.PID == 200 {
				t.Errorf("inode %d: held by unreadable pid 200", b.Inode)
			}
		}
	}

	// The running system, as another user: at least this test process
	// (root's) is out of sight.
	if root {
		got := scanAs(t, nobody, Config{})
		if got.Stats.Unreadable < 1 {
			t.Errorf("nobody could read every one of %d processes", got.Stats.Processes)
		}
		if got.Stats.AsRoot {
			t.Error("a scan as nobody says it ran as root")
		}
		want := fmt.Sprintf("%d processes unreadable: run as root", got.Stats.Unreadable)
		if notes := got.Notes(); len(notes) == 0 || (got.Stats.Unreadable > 1 && notes[0] != want) {
			t.Errorf("notes %q, want %q first", notes, want)
		}
	}
}

// nobody is the user unprivileged children run as.
const nobody = 65534

func TestScanErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Scan(ctx, fakeTree(t, "linux-6.1")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	if _, err := Scan(context.Background(), &Config{ProcDir: filepath.Join(t.TempDir(), "none")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing proc: err = %v, want ErrNotExist", err)
	}
}

// A maps line that does not parse is a problem; the rest of the scan
// stands.
func TestScanMalformedMaps(t *testing.T) {
	cfg := fakeTree(t, "linux-6.1")
	bad := filepath.Join(cfg.ProcDir, "400", "maps")
	if err := os.WriteFile(bad, []byte("7f00000 r--s 00000000 00:07 77   /dmabuf:orphan\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Scan(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Problems) != 1 || !strings.Contains(got.Problems[0], "400/maps") {
		t.Errorf("problems %q, want one naming 400/maps", got.Problems)
	}
	if len(got.Buffers) != 6 {
		t.Errorf("%d buffers, want the 6 of pid 100", len(got.Buffers))
	}
}

// The running system: no error, and this process is seen.
func TestScanSelf(t *testing.T) {
	got, err := Scan(context.Background(), nil)
	if errors.Is(err, ErrNotSupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.Processes < 1 {
		t.Errorf("%d processes looked at", got.Stats.Processes)
	}
}

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		size int64
		n    int
		want []int64
	}{
		{10, 3, []int64{4, 3, 3}},
		{4096, 2, []int64{2048, 2048}},
		{5, 1, []int64{5}},
		{2, 3, []int64{1, 1, 0}},
	} {
		var got []int64
		for i := range tc.n {
			got = append(got, share(tc.size, tc.n, i))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("share(%d, %d) (-want +got):\n%s", tc.size, tc.n, diff)
		}
	}
	if share(10, 0, 0) != 0 {
		t.Error("share over no holders is not 0")
	}
}

func TestStatFlags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", 2129984, true},
		{"77 (a) b) (c) R 1 77 77 0 -1 4194560 5", 4194560, true},
		{"77 (x", 0, false},
		{"77 (x) R 1 2", 0, false},
	} {
		got, ok := statFlags([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("statFlags(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNotes(t *testing.T) {
	for _, tc := range []struct {
		stats Stats
		want  []string
	}{
		{Stats{Bufinfo: true}, nil},
		{Stats{Bufinfo: true, Unreadable: 1}, []string{"1 process unreadable: run as root"}},
		{Stats{Bufinfo: true, Unreadable: 12}, []string{"12 processes unreadable: run as root"}},
		{Stats{Bufinfo: true, Unreadable: 2, AsRoot: true}, []string{"2 processes unreadable even as root (hidden by a security module or a PID namespace)"}},
		{Stats{}, []string{"attached devices unknown: debugfs dma_buf/bufinfo not readable (run as root with debugfs mounted)"}},
		{Stats{AsRoot: true}, []string{"attached devices unknown: debugfs dma_buf/bufinfo not readable (mount debugfs on /sys/kernel/debug)"}},
		{Stats{BufinfoSkipped: true}, nil},
	} {
		s := &Snapshot{Stats: tc.stats}
		if diff := cmp.Diff(tc.want, s.Notes()); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tc.stats, diff)
		}
	}
	if (*Snapshot)(nil).Notes() != nil || (*Snapshot)(nil).TotalBytes() != 0 {
		t.Error("nil Snapshot")
	}
}
