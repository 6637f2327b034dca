package adversarial

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/protocol"
)

// heapd at RLIMIT_NOFILE exhaustion: with its fd limit set (prlimit) a
// few fds above what it holds at rest, clients fill the table; heapd
// refuses what it cannot do with a clear error (a connection it cannot
// accept and an allocation it has no fd for: BUSY; fds that do not fit:
// PROTOCOL, MSG_CTRUNC), never loses or leaks an fd,
// and serves normally once the clients are gone, still under the low
// limit.
func TestFDExhaustion(t *testing.T) {
	tg := start(t)
	pid := tg.d.PID()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatalf("prlimit heapd: %v", err)
	}
	// The limit is on fd numbers: leave `spare` free numbers.
	const spare = 10
	limit, free := 0, 0
	for free < spare {
		if _, used := tg.baseFDs[limit]; !used {
			free++
		}
		limit++
	}
	low := unix.Rlimit{Cur: uint64(limit), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatalf("prlimit heapd: %v", err)
	}
	restore := func() { _ = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil) }
	defer restore()
	t.Logf("heapd's RLIMIT_NOFILE: %d (%d fds free)", limit, spare)

	var conns []*raw
	defer func() {
		for _, r := range conns {
			r.Close()
		}
	}()
	served, waiting, refused := 0, 0, 0
	for range spare {
		r := mustDial(t, tg.d.Socket)
		conns = append(conns, r)
		// heapd may refuse (BUSY) and hang up before Hello is sent: the
		// answer is read all the same.
		_ = r.send(1, hello)
		_, m, err := r.recv(2 * time.Second)
		switch m := m.(type) {
		case *protocol.HelloReply:
			served++
		case *protocol.Error:
			refused++
			if m.Code != protocol.CodeBusy || !strings.Contains(m.Message, "file descriptors") {
				t.Errorf("a connection at the fd limit was refused with %v, want BUSY saying heapd is out of file descriptors", m)
			}
		default:
			waiting++
			t.Errorf("a connection at the fd limit got no answer in 2s: %v", err)
		}
	}
	t.Logf("%d connections: %d served, %d refused with BUSY, %d without an answer", len(conns), served, refused, waiting)
	if served == 0 || refused == 0 {
		t.Errorf("with %d free fds heapd served %d of %d connections and refused %d: want some of each", spare, served, len(conns), refused)
	}
	// The first connection served asks for 16 buffers: more fds than
	// heapd has.
	r := conns[0]
	alloc := allocBytes("system", 4096, func(b []byte) { binary.LittleEndian.PutUint16(b[2:], protocol.MaxBatch) })
	if err := r.sendRaw(alloc); err != nil {
		t.Fatal(err)
	}
	_, m, err := r.recv(10 * time.Second)
	switch m := m.(type) {
	case *protocol.Allocated:
		t.Logf("16 buffers allocated anyway (%v)", m.IDs)
	case *protocol.Error:
		t.Logf("16 buffers at the fd limit: %v", m)
		if m.Code != protocol.CodeBusy || !strings.Contains(m.Message, "file descriptors") {
			t.Errorf("16 buffers at the fd limit: got %v, want BUSY saying heapd is out of file descriptors", m)
		}
	default:
		t.Errorf("16 buffers at the fd limit: no answer: %v", err)
	}
	// 16 fds sent to heapd at the limit.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	fds := make([]int, protocol.MaxFDs)
	for i := range fds {
		fds[i] = p[i%2]
	}
	err = r.sendRaw(listHeapsWithFDs(len(fds)), fds...)
	unix.Close(p[0])
	unix.Close(p[1])
	if err != nil {
		t.Fatal(err)
	}
	if e := r.expectError(t, "16 fds at the fd limit", protocol.CodeProtocol); e != nil {
		t.Logf("16 fds at the fd limit: %v", e)
	}

	// Free the fds; heapd recovers under the same low limit.
	for _, r := range conns {
		r.Close()
	}
	conns = nil
	tg.waitFDs(t) // heapd notices the hang-ups asynchronously
	lat := tg.healthy(t)
	t.Logf("after the clients left, still at the low limit: healthy round trip %v", lat)
	tg.waitLedgerEmpty(t)
	restore()
	tg.check(t)
}
