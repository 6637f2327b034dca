package dmabuf_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/emulated"
	"github.com/heapd/heapd/internal/testutil"
)

// page is the system page size: buffers are whole pages (4 KiB on x86,
// 16 KiB on a Raspberry Pi 5 kernel).
var page = int64(os.Getpagesize())

func alloc(t *testing.T, size int64, name string) *dmabuf.Buffer {
	t.Helper()
	b, err := emulated.Alloc(size, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func mapBuf(t *testing.T, b *dmabuf.Buffer, prot dmabuf.Prot) *dmabuf.Mapping {
	t.Helper()
	m, err := b.Map(prot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestEmulatedRoundTrip(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, 3*page+1, "roundtrip")
	m := mapBuf(t, b, dmabuf.ProtReadWrite)
	if got, want := m.Len(), int(b.Size()); got != want {
		t.Fatalf("Len = %d, want %d", got, want)
	}
	pattern := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, m.Len()/4)
	err := b.CPUAccess(dmabuf.Write, func() error {
		n, err := m.WriteAt(pattern, 0)
		if n != len(pattern) {
			t.Errorf("WriteAt = %d", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second, read-only mapping of a duplicate sees the same memory.
	c, err := b.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := mapBuf(t, c, dmabuf.ProtRead)
	got := make([]byte, len(pattern))
	err = c.CPUAccess(dmabuf.Read, func() error {
		_, err := r.ReadAt(got, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern) {
		t.Error("readback through a clone differs from what was written")
	}
	if !bytes.Equal(r.Bytes(), m.Bytes()) {
		t.Error("Bytes of the two mappings differ")
	}
}

func TestMappingBounds(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "bounds")
	n := int(page)
	m := mapBuf(t, b, dmabuf.ProtReadWrite)
	type result struct {
		N   int
		Err error
	}
	for _, tc := range []struct {
		name  string
		write bool
		n     int
		off   int64
		want  result
	}{
		{"read all", false, n, 0, result{n, nil}},
		{"read tail", false, 10, page - 6, result{6, io.EOF}},
		{"read at end", false, 1, page, result{0, io.EOF}},
		{"read past end", false, 1, 1 << 40, result{0, io.EOF}},
		{"read negative", false, 1, -1, result{0, dmabuf.ErrOutOfRange}},
		{"read empty", false, 0, 0, result{0, nil}},
		{"write all", true, n, 0, result{n, nil}},
		{"write last byte", true, 1, page - 1, result{1, nil}},
		{"write empty at end", true, 0, page, result{0, nil}},
		{"write straddling end", true, 10, page - 6, result{0, dmabuf.ErrOutOfRange}},
		{"write past end", true, 1, page + 1, result{0, dmabuf.ErrOutOfRange}},
		{"write huge offset", true, 1, 1<<63 - 1, result{0, dmabuf.ErrOutOfRange}},
		{"write negative", true, 1, -page, result{0, dmabuf.ErrOutOfRange}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.n)
			var got result
			if tc.write {
				got.N, got.Err = m.WriteAt(p, tc.off)
			} else {
				got.N, got.Err = m.ReadAt(p, tc.off)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b error) bool { return errors.Is(a, b) || errors.Is(b, a) })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestMappingProt(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "prot")
	for _, p := range []dmabuf.Prot{0, 8, dmabuf.ProtReadWrite | 4} {
		if m, err := b.Map(p); !errors.Is(err, dmabuf.ErrInvalidArgument) {
			m.Close()
			t.Errorf("Map(%v) = %v, want ErrInvalidArgument", p, err)
		}
	}
	r := mapBuf(t, b, dmabuf.ProtRead)
	if _, err := r.WriteAt([]byte{1}, 0); !errors.Is(err, dmabuf.ErrNotSupported) {
		t.Errorf("WriteAt on a read-only mapping = %v, want ErrNotSupported", err)
	}
	if got := r.Prot(); got != dmabuf.ProtRead {
		t.Errorf("Prot = %v", got)
	}
}

func TestMappingOutlivesBufferAndCloseIsIdempotent(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := emulated.Alloc(page, "outlive")
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Map(dmabuf.ProtReadWrite)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteAt([]byte("still mapped"), 0); err != nil {
		t.Errorf("WriteAt after the Buffer closed: %v", err)
	}
	for range 2 {
		if err := m.Close(); err != nil {
			t.Errorf("Mapping.Close: %v", err)
		}
	}
	if m.Bytes() != nil || m.Len() != 0 {
		t.Error("a closed Mapping still exposes memory")
	}
	if _, err := m.ReadAt(make([]byte, 1), 0); !errors.Is(err, dmabuf.ErrClosed) {
		t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
	}
	if _, err := m.WriteAt(make([]byte, 1), 0); !errors.Is(err, dmabuf.ErrClosed) {
		t.Errorf("WriteAt after Close = %v, want ErrClosed", err)
	}
	var nilMap *dmabuf.Mapping
	if err := nilMap.Close(); err != nil || nilMap.Bytes() != nil || nilMap.Len() != 0 {
		t.Error("nil Mapping misbehaves")
	}
	if _, err := nilMap.ReadAt(nil, 0); !errors.Is(err, dmabuf.ErrClosed) {
		t.Errorf("nil ReadAt = %v", err)
	}
}

// Every method of a closed (or nil) Buffer fails with ErrClosed and touches
// no fd.
func TestClosedBuffer(t *testing.T) {
	testutil.CheckFDs(t)
	b, err := emulated.Alloc(page, "closed")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	for _, buf := range []*dmabuf.Buffer{b, nil} {
		calls := map[string]error{}
		_, calls["Map"] = buf.Map(dmabuf.ProtRead)
		_, calls["Dup"] = buf.Dup()
		_, calls["File"] = buf.File()
		_, calls["Clone"] = buf.Clone()
		_, calls["Stat"] = buf.Stat()
		calls["SetName"] = buf.SetName("x")
		calls["BeginCPUAccess"] = buf.BeginCPUAccess(dmabuf.Read)
		calls["EndCPUAccess"] = buf.EndCPUAccess(dmabuf.Read)
		calls["CPUAccess"] = buf.CPUAccess(dmabuf.Read, func() error { t.Error("f called"); return nil })
		_, calls["ExportSyncFile"] = buf.ExportSyncFile(dmabuf.Read)
		calls["ImportSyncFD"] = buf.ImportSyncFD(dmabuf.Read, 0)
		for name, err := range calls {
			if !errors.Is(err, dmabuf.ErrClosed) {
				t.Errorf("%s on closed buffer (nil=%v) = %v, want ErrClosed", name, buf == nil, err)
			}
		}
		if buf.FD() != -1 {
			t.Errorf("FD() = %d after Close", buf.FD())
		}
	}
	if b.Size() != page || b.Kind() != dmabuf.KindEmulated {
		t.Error("Size/Kind must stay valid after Close")
	}
}

func TestDupAndFileShareMemory(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "share")
	m := mapBuf(t, b, dmabuf.ProtReadWrite)
	copy(m.Bytes(), "hello")

	fd, err := b.Dup()
	if err != nil {
		t.Fatal(err)
	}
	f, err := b.File()
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	defer f.Close()
	for _, check := range []int{fd, int(f.Fd())} {
		flags, err := unix.FcntlInt(uintptr(check), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("duplicate fd %d: flags %#x, %v: want FD_CLOEXEC", check, flags, err)
		}
		if check == b.FD() {
			t.Error("duplicate has the Buffer's own fd number")
		}
	}
	// Closing the Buffer leaves the duplicates usable.
	b2, err := dmabuf.New(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := f.ReadAt(got, 0); err != nil || string(got) != "hello" {
		t.Errorf("File ReadAt = %q, %v", got, err)
	}
	m2 := mapBuf(t, b2, dmabuf.ProtRead)
	if string(m2.Bytes()[:5]) != "hello" {
		t.Errorf("Dup mapping = %q", m2.Bytes()[:5])
	}
}

func TestNewFromFile(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "fromfile")
	f, err := b.File()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := dmabuf.NewFromFile(f)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer b2.Close()
	if b2.Kind() != dmabuf.KindEmulated || b2.Size() != page {
		t.Errorf("NewFromFile: kind %v size %d", b2.Kind(), b2.Size())
	}
	if _, err := f.Stat(); err == nil {
		t.Error("NewFromFile left f open")
	}
	// On error the caller keeps the file.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	if _, err := dmabuf.NewFromFile(r); !errors.Is(err, dmabuf.ErrNotDMABuf) {
		t.Errorf("NewFromFile(pipe) = %v, want ErrNotDMABuf", err)
	}
	if _, err := r.Stat(); err != nil {
		t.Errorf("NewFromFile closed the caller's file on error: %v", err)
	}
	if _, err := dmabuf.NewFromFile(nil); !errors.Is(err, dmabuf.ErrNotDMABuf) {
		t.Errorf("NewFromFile(nil) = %v", err)
	}
}

func TestCPUAccess(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "cpu")
	errF := errors.New("f failed")
	for _, tc := range []struct {
		name   string
		dir    dmabuf.Direction
		f      func() error
		want   error
		called bool
	}{
		{"read", dmabuf.Read, func() error { return nil }, nil, true},
		{"write", dmabuf.Write, func() error { return nil }, nil, true},
		{"read-write", dmabuf.ReadWrite, func() error { return nil }, nil, true},
		{"f error", dmabuf.ReadWrite, func() error { return errF }, errF, true},
		{"zero direction", 0, nil, dmabuf.ErrInvalidArgument, false},
		{"unknown direction", 4, nil, dmabuf.ErrInvalidArgument, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			err := b.CPUAccess(tc.dir, func() error { called = true; return tc.f() })
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("CPUAccess = %v, want %v", err, tc.want)
			}
			if called != tc.called {
				t.Errorf("f called = %v, want %v", called, tc.called)
			}
		})
	}
	for _, d := range []dmabuf.Direction{0, 3 + 4} {
		if err := b.BeginCPUAccess(d); !errors.Is(err, dmabuf.ErrInvalidArgument) {
			t.Errorf("BeginCPUAccess(%v) = %v", d, err)
		}
		if err := b.EndCPUAccess(d); !errors.Is(err, dmabuf.ErrInvalidArgument) {
			t.Errorf("EndCPUAccess(%v) = %v", d, err)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a panic in f was swallowed")
			}
		}()
		_ = b.CPUAccess(dmabuf.Read, func() error { panic("boom") })
	}()
}

func TestDirectionAndProtStrings(t *testing.T) {
	got := []string{dmabuf.Read.String(), dmabuf.Write.String(), dmabuf.ReadWrite.String(), dmabuf.Direction(9).String(),
		dmabuf.ProtRead.String(), dmabuf.ProtWrite.String(), dmabuf.ProtReadWrite.String(), dmabuf.Prot(8).String(),
		dmabuf.KindKernel.String(), dmabuf.KindEmulated.String()}
	want := []string{"read", "write", "read-write", "Direction(9)", "r", "w", "rw", "Prot(8)", "dmabuf", "emulated"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestStatEmulatedNames(t *testing.T) {
	testutil.CheckFDs(t)
	for _, name := range []string{"", "a", "with space", "slash/and:colon", "0123456789012345678901234567890"} {
		b := alloc(t, page, name)
		info, err := b.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != name || info.Exporter != dmabuf.EmulatedExporter || info.Kind != dmabuf.KindEmulated {
			t.Errorf("Stat of %q = %+v", name, info)
		}
		b.Close()
	}
}

func TestSetNameValidation(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "v")
	for _, tc := range []struct {
		name string
		want error
	}{
		{"0123456789012345678901234567890", dmabuf.ErrNotSupported}, // valid; emulated
		{"", dmabuf.ErrNotSupported},
		{"01234567890123456789012345678901", dmabuf.ErrInvalidName},
		{"nul\x00inside", dmabuf.ErrInvalidName},
		{"line\nbreak", dmabuf.ErrInvalidName},
	} {
		if err := b.SetName(tc.name); !errors.Is(err, tc.want) {
			t.Errorf("SetName(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestImportSyncFileArguments(t *testing.T) {
	testutil.CheckFDs(t)
	b := alloc(t, page, "imp")
	if err := b.ImportSyncFile(dmabuf.Write, nil); !errors.Is(err, dmabuf.ErrInvalidArgument) {
		t.Errorf("ImportSyncFile(nil) = %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := b.ImportSyncFile(dmabuf.Write, r); !errors.Is(err, dmabuf.ErrNotSupported) {
		t.Errorf("ImportSyncFile on emulated = %v, want ErrNotSupported", err)
	}
	if err := b.ImportSyncFile(0, r); !errors.Is(err, dmabuf.ErrInvalidArgument) {
		t.Errorf("ImportSyncFile(dir 0) = %v, want ErrInvalidArgument", err)
	}
	if _, err := b.ExportSyncFile(0); !errors.Is(err, dmabuf.ErrInvalidArgument) {
		t.Errorf("ExportSyncFile(dir 0) = %v, want ErrInvalidArgument", err)
	}
}
