package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/scan"
)

// ownerTree writes a --root system in which pid 100 "compositor" holds
// the buffers of inodes held (one fd each) and pid 200 "viewer" holds the
// first of them and a buffer heapd did not allocate (inode 999999).
func ownerTree(t *testing.T, size int64, held ...uint64) string {
	t.Helper()
	dir := t.TempDir()
	fdinfo := func(ino uint64) []byte {
		return fmt.Appendf(nil, "pos:\t0\nflags:\t02000002\nmnt_id:\t8\nino:\t%d\nsize:\t%d\ncount:\t3\nexp_name:\tsystem\nname:\t\n", ino, size)
	}
	files := map[string][]byte{
		"proc/100/comm":     []byte("compositor\n"),
		"proc/100/maps":     nil,
		"proc/200/comm":     []byte("viewer\n"),
		"proc/200/maps":     nil,
		"proc/200/fdinfo/3": fdinfo(held[0]),
		"proc/200/fdinfo/4": fdinfo(999999),
	}
	for i, ino := range held {
		files[fmt.Sprintf("proc/100/fdinfo/%d", 10+i)] = fdinfo(ino)
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

// top joins a real heapd's ledger: the buffers heapd handed out carry
// their owner (the client that asked: its comm, pid and uid, the heap and
// heapd's id) in -o json's buffers and processes and in both tables; a
// buffer heapd did not allocate has none. The processes are a --root tree
// holding the inodes of the buffers heapd really allocated (on the host
// the emulated heap's memfds, which a real /proc scan does not count as
// DMA-BUFs; TestIntegrationTopOwners scans the real /proc in the VM).
func TestTopOwnersFromHeapd(t *testing.T) {
	d := daemontest.Start(t, nil)
	t.Setenv(client.EnvSocket, d.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &client.Client{}
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 1 << 20, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var inodes []uint64
	for _, b := range a.Buffers {
		info, err := b.Stat()
		if err != nil {
			t.Fatal(err)
		}
		inodes = append(inodes, info.Inode)
	}
	comm := selfComm(t)
	me := scan.Owner{Client: comm, PID: os.Getpid(), UID: uint32(os.Getuid()), Heap: a.Heap}

	root := ownerTree(t, a.Size, inodes...)
	out, err := topRoot(t, "--root", root, "top", "--once", "-o", "json", "--no-debugfs")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		Buffers   []scan.Buffer
		Processes []topProcess
		Stats     scan.Stats
		Problems  []string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !got.Stats.Ledger || len(got.Problems) != 0 {
		t.Fatalf("ledger joined %v, problems %q\n%s", got.Stats.Ledger, got.Problems, d.Log())
	}
	owners := map[uint64]*scan.Owner{}
	for _, b := range got.Buffers {
		owners[b.Inode] = b.Owner
	}
	for i, ino := range inodes {
		want := me
		want.Lease = strconv.FormatUint(a.IDs[i], 10)
		if diff := cmp.Diff(&want, owners[ino]); diff != "" {
			t.Errorf("owner of buffer %d (inode %d) (-want +got):\n%s", i, ino, diff)
		}
	}
	if o, ok := owners[999999]; !ok || o != nil {
		t.Errorf("the buffer heapd did not allocate: listed %v, owner %+v", ok, o)
	}
	procOwners := map[int][]topOwner{}
	for _, p := range got.Processes {
		procOwners[p.PID] = p.Owners
	}
	mine := func(n int) []topOwner {
		return []topOwner{{Client: me.Client, PID: me.PID, UID: me.UID, Buffers: n, Bytes: int64(n) * a.Size}}
	}
	if diff := cmp.Diff(map[int][]topOwner{100: mine(2), 200: mine(1)}, procOwners); diff != "" {
		t.Errorf("processes' owners (-want +got):\n%s", diff)
	}

	// The tables name the owner as comm[pid].
	name := fmt.Sprintf("%s[%d]", comm, os.Getpid())
	for _, view := range []string{"processes", "buffers"} {
		out, err := topRoot(t, "--root", root, "top", "--once", "--view", view, "--no-debugfs")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		lines := strings.Split(out, "\n")
		if !strings.HasSuffix(strings.TrimSpace(lines[0]), "OWNER") {
			t.Errorf("%s view has no OWNER column:\n%s", view, out)
		}
		for _, l := range lines[1:] {
			heapd := strings.Contains(l, "compositor") || strings.Contains(l, "viewer") && view == "processes" ||
				view == "buffers" && (strings.HasPrefix(l, strconv.FormatUint(inodes[0], 10)) || strings.HasPrefix(l, strconv.FormatUint(inodes[1], 10)))
			if heapd && !strings.HasSuffix(strings.TrimSpace(l), name) {
				t.Errorf("%s view: %q does not end in the owner %s", view, l, name)
			}
			if strings.HasPrefix(l, "999999 ") && !strings.HasSuffix(strings.TrimSpace(l), "-") {
				t.Errorf("buffers view: %q has an owner", l)
			}
		}
	}
}

// Without a heapd (no admin socket) top shows no owners and reports
// nothing; with an admin socket nobody answers on, it reports a problem
// and still shows the scan.
func TestTopOwnersWithoutHeapd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "socket")
	t.Setenv(client.EnvSocket, sock)
	root := ownerTree(t, 4096, 1)
	for _, tc := range []struct {
		name    string
		setup   func()
		problem string
	}{
		{"no heapd", func() {}, ""},
		{"heapd not answering", func() {
			if err := os.WriteFile(sock+".admin", nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "heapd ledger: heapd's admin socket:"},
	} {
		tc.setup()
		out, err := topRoot(t, "--root", root, "top", "--once", "-o", "json", "--no-debugfs")
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out)
		}
		var got struct {
			Buffers  []scan.Buffer
			Stats    scan.Stats
			Problems []string
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", tc.name, err, out)
		}
		if len(got.Buffers) != 2 || got.Stats.Ledger {
			t.Errorf("%s: %d buffers, ledger %v; want 2 buffers, no ledger", tc.name, len(got.Buffers), got.Stats.Ledger)
		}
		switch {
		case tc.problem == "" && len(got.Problems) != 0:
			t.Errorf("%s: problems %q, want none", tc.name, got.Problems)
		case tc.problem != "" && (len(got.Problems) != 1 || !strings.HasPrefix(got.Problems[0], tc.problem)):
			t.Errorf("%s: problems %q, want one starting %q", tc.name, got.Problems, tc.problem)
		}
	}
}

// In the VM, over the real /proc: the kernel DMA-BUFs a real heapd
// allocated for this process show up with this process as holder and as
// owner, in the buffer and the process view of -o json, and are gone
// once closed.
func TestIntegrationTopOwners(t *testing.T) {
	testutil.NeedPath(t, "/dev/dma_heap/system", "kernel built without CONFIG_DMABUF_HEAPS_SYSTEM?")
	testutil.NeedRoot(t)
	d := daemontest.Start(t, nil)
	t.Setenv(client.EnvSocket, d.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &client.Client{}
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 1 << 20, Count: 2, Label: "topowner"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Emulated() {
		t.Fatalf("heapd served emulated memory with /dev/dma_heap/system present:\n%s", d.Log())
	}
	mine := map[uint64]string{}
	for i, b := range a.Buffers {
		info, err := b.Stat()
		if err != nil {
			t.Fatal(err)
		}
		mine[info.Inode] = strconv.FormatUint(a.IDs[i], 10)
	}
	m, err := a.Buffers[0].Map(dmabuf.ProtRead)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	type snapshot struct {
		Buffers   []scan.Buffer
		Processes []topProcess
		Stats     scan.Stats
		Problems  []string
	}
	top := func() snapshot {
		t.Helper()
		out, err := topRoot(t, "top", "--once", "-o", "json")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var s snapshot
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		return s
	}
	s := top()
	if !s.Stats.Ledger || len(s.Problems) != 0 {
		t.Fatalf("ledger joined %v, problems %q", s.Stats.Ledger, s.Problems)
	}
	me := scan.Owner{Client: selfComm(t), PID: os.Getpid(), UID: uint32(os.Getuid()), Heap: "system"}
	found := 0
	for _, b := range s.Buffers {
		lease, ok := mine[b.Inode]
		if !ok {
			continue
		}
		found++
		want := me
		want.Lease = lease
		if diff := cmp.Diff(&want, b.Owner); diff != "" {
			t.Errorf("buffer %d: owner (-want +got):\n%s", b.Inode, diff)
		}
		if b.Exporter != "system" || b.Size != a.Size {
			t.Errorf("buffer %d: exporter %q size %d, want system, %d", b.Inode, b.Exporter, b.Size, a.Size)
		}
		var holder bool
		for _, h := range b.Holders {
			holder = holder || h.PID == os.Getpid()
		}
		if !holder {
			t.Errorf("buffer %d: this process is not among its holders %+v", b.Inode, b.Holders)
		}
	}
	if found != 2 {
		t.Fatalf("top found %d of this process's 2 heapd buffers", found)
	}
	var owners []topOwner
	for _, p := range s.Processes {
		if p.PID == os.Getpid() {
			owners = p.Owners
		}
	}
	want := []topOwner{{Client: me.Client, PID: me.PID, UID: me.UID, Buffers: 2, Bytes: 2 * a.Size}}
	if diff := cmp.Diff(want, owners); diff != "" {
		t.Errorf("this process's owners (-want +got):\n%s", diff)
	}

	// heapd's ledger keeps its own reference until its sweep sees that
	// nobody else holds the buffer (release_interval, 1 s by default).
	m.Close()
	a.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var left []string
		for _, b := range top().Buffers {
			if _, ok := mine[b.Inode]; ok {
				left = append(left, fmt.Sprintf("%d (holders %+v)", b.Inode, b.Holders))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffers still listed 10 s after every fd and mapping was closed: %s", strings.Join(left, ", "))
		}
	}
}

func selfComm(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
