package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/logind/logindtest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// Test identities (the VM tier's /etc/passwd has heapd-test as 1000).
const (
	quotaUID  = 1000 // rule "quota-user"
	raceUID   = 1001 // rule "race-user"
	seatUID   = 1002 // has a seated session in the fake logind
	noSeatUID = 1003 // has none
	nobody    = 65534
	videoGID  = 44
)

// releaseInterval is the e2e policy's [ledger] release_interval.
const releaseInterval = 200 * time.Millisecond

const e2ePolicy = `
[ledger]
release_interval = "200ms"

[logind]
cache = "50ms"

[[rule]]
name = "root"
uid = [0]
heaps = ["*"]

[[rule]]
name = "quota-user"
uid = [1000]
heaps = ["system", "contiguous"]
max_alloc = "1MiB"

[rule.quota]
bytes = "256KiB"
buffers = 16

[rule.quota.contiguous]
bytes = "128KiB"

[[rule]]
name = "race-user"
uid = [1001]
heaps = ["system"]

[rule.quota]
buffers = 10

[[rule]]
name = "video"
gid = [44]
heaps = ["system"]

[[rule]]
name = "seated"
session = "seat"
heaps = ["system"]
`

func startDaemon(t *testing.T, env ...string) *daemontest.Daemon {
	t.Helper()
	testutil.NeedRoot(t) // children run as other uids
	return daemontest.Start(t, &daemontest.Options{Policy: e2ePolicy, Env: env})
}

// heapsUnderTest are the heaps the quota and release tests run on: system
// (the emulated heap on a machine without DMA-BUF heaps) and, where there
// is one, contiguous (CMA). In the VM tier both must be real.
func heapsUnderTest(t *testing.T, d *daemontest.Daemon) []protocol.HeapInfo {
	t.Helper()
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	hs, _, err := c.Heaps(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []protocol.HeapInfo
	for _, h := range hs {
		if h.Name == "system" || h.Name == "contiguous" {
			out = append(out, h)
		}
	}
	if testutil.Required() {
		if len(out) != 2 || out[0].Backend != "kernel" || out[1].Backend != "kernel" {
			t.Fatalf("the VM tier needs kernel system and contiguous heaps, heapd has %+v", out)
		}
	}
	return out
}

func TestE2EDenied(t *testing.T) {
	d := startDaemon(t)
	p := startHelper(t, d, nobody, nobody)
	r := p.do("alloc", "system", 4096, 1)
	if protocol.Code(r.Code) != protocol.CodeDenied {
		t.Fatalf("nobody: %+v", r)
	}
	for _, want := range []string{"uid 65534 (ledger.test) matches no rule of", `rule 4 "video" needs gid 44`, `rule 5 "seated" needs everyone with an active local session on a seat`} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("denial %q\nlacks %q", r.Error, want)
		}
	}
	if !strings.Contains(d.Log(), `msg="allocation denied" uid=65534`) {
		t.Errorf("the denial is not logged:\n%s", d.Log())
	}
	// A member of video by supplementary group is allowed system only.
	v := startHelper(t, d, 1234, 1234, videoGID)
	v.must("alloc", "system", 4096, 1)
	r = v.do("alloc", "contiguous", 4096, 1)
	if c := protocol.Code(r.Code); c != protocol.CodeDenied && c != protocol.CodeUnknownHeap {
		t.Errorf("video member, contiguous: %+v", r)
	}
	u := v.must("usage").Usage
	if u.Flags&protocol.UsageAccounted == 0 || u.Buffers != 1 || !strings.Contains(u.Policy, `rule 4 "video"`) {
		t.Errorf("usage %+v", u)
	}
}

// The quota is reached exactly, then refused; freeing every fd and
// mapping makes room again within the release interval.
func TestE2EQuotaAndRelease(t *testing.T) {
	d := startDaemon(t)
	for _, h := range heapsUnderTest(t, d) {
		t.Run(h.Name, func(t *testing.T) {
			p := startHelper(t, d, quotaUID, quotaUID)
			size, n, key := int64(64<<10), 4, "quota.bytes" // 256 KiB in all
			if h.Name == "contiguous" {
				n, key = 2, "quota.contiguous.bytes" // 128 KiB of contiguous memory
			}
			p.must("alloc", h.Name, size, n-1)
			p.must("alloc", h.Name, size, 1) // exactly the quota
			u := p.must("usage").Usage
			if u.Bytes != uint64(n)*uint64(size) || u.Buffers != uint64(n) {
				t.Fatalf("usage at the quota: %+v", u)
			}
			r := p.do("alloc", h.Name, 1, 1)
			if protocol.Code(r.Code) != protocol.CodeQuota || !strings.Contains(r.Error, key) || !strings.Contains(r.Error, `rule 2 "quota-user"`) {
				t.Fatalf("one byte over: %+v", r)
			}
			// Mapped and then closed: still held.
			p.must("map")
			p.must("close")
			time.Sleep(2 * releaseInterval)
			if r := p.do("alloc", h.Name, 1, 1); protocol.Code(r.Code) != protocol.CodeQuota {
				t.Fatalf("fds closed but still mapped: %+v", r)
			}
			// Unmapped too: free within the release interval.
			p.must("unmap")
			w := p.must("waitfree", (2*releaseInterval + time.Second).Milliseconds())
			t.Logf("%s: released %s after the last unmap (release_interval %s)", h.Name, w.Elapsed, releaseInterval)
			p.must("alloc", h.Name, size, n)
			// A Reserve that would be refused re-checks at once: no
			// waiting for the sweep.
			p.must("close")
			p.must("alloc", h.Name, size, n)
			p.must("close")
		})
	}
}

// A buffer handed to a child process stays charged until the child exits
// too, and after the allocating process and its connection are gone.
func TestE2EHandoff(t *testing.T) {
	d := startDaemon(t)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, h := range heapsUnderTest(t, d) {
		t.Run(h.Name, func(t *testing.T) {
			p := startHelper(t, d, quotaUID, quotaUID)
			ids := p.must("alloc", h.Name, 64<<10, 1).IDs
			kid := p.must("spawn").PID
			t.Cleanup(func() { syscall.Kill(kid, syscall.SIGKILL); unix.Wait4(kid, nil, 0, nil) })
			p.must("close")
			p.must("reconnect")
			if u := p.must("usage").Usage; u.Buffers != 1 {
				t.Fatalf("after handing off and reconnecting: %+v", u)
			}
			p.stop() // the allocating process and its connections are gone
			time.Sleep(2 * releaseInterval)
			e := ledgerEntry(t, d, ids[0])
			if e == nil || e.UID != quotaUID {
				t.Fatalf("buffer %d not charged to %d while the child holds it: %+v", ids[0], quotaUID, e)
			}
			if len(e.Holders) != 1 || int(e.Holders[0].PID) != kid || e.Holders[0].FDs != 1 || e.Holders[0].UID != quotaUID {
				t.Errorf("holders %+v, want the child %d", e.Holders, kid)
			}
			syscall.Kill(kid, syscall.SIGKILL)
			unix.Wait4(kid, nil, 0, nil)
			start := time.Now()
			for ledgerEntry(t, d, ids[0]) != nil {
				if time.Since(start) > 2*releaseInterval+time.Second {
					t.Fatalf("buffer %d still charged %s after the child exited", ids[0], time.Since(start))
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("%s: released %s after the holder exited", h.Name, time.Since(start))
		})
	}
}

// Eight connections of one uid race for a quota of 10 buffers: exactly
// 10 allocations succeed.
func TestE2EParallelConnections(t *testing.T) {
	d := startDaemon(t)
	p := startHelper(t, d, raceUID, raceUID)
	r := p.must("race", 8, "system", 4096, 5)
	if r.Won != 10 || r.Codes[uint32(protocol.CodeQuota)] != 30 {
		t.Fatalf("won %d, refusals %v; want 10 and 30 QUOTA", r.Won, r.Codes)
	}
	if u := p.must("usage").Usage; u.Buffers != 10 || u.LimitBuffers != 10 {
		t.Fatalf("usage %+v", u)
	}
	// A second process of the same uid shares the quota.
	q := startHelper(t, d, raceUID, raceUID)
	if r := q.do("alloc", "system", 4096, 1); protocol.Code(r.Code) != protocol.CodeQuota {
		t.Fatalf("second process: %+v", r)
	}
}

// A fake logind on a private bus decides the session rule; without one
// (the VM tier has no D-Bus) session rules match nobody.
func TestE2ESession(t *testing.T) {
	addr := logindtest.StartBus(t)
	if addr == "" {
		d := startDaemon(t, "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus")
		r := startHelper(t, d, seatUID, seatUID).do("alloc", "system", 4096, 1)
		if protocol.Code(r.Code) != protocol.CodeDenied || !strings.Contains(r.Error, "logind is not available here") {
			t.Fatalf("without logind: %+v", r)
		}
		return
	}
	fake := logindtest.Serve(t, addr,
		logindtest.Session{ID: "1", UID: seatUID, User: "seated", Seat: "seat0", Active: true},
		logindtest.Session{ID: "2", UID: noSeatUID, User: "remote", Active: true, Remote: true},
	)
	d := startDaemon(t, "DBUS_SYSTEM_BUS_ADDRESS="+addr)
	p := startHelper(t, d, seatUID, seatUID)
	p.must("alloc", "system", 4096, 1)
	if u := p.must("usage").Usage; !strings.Contains(u.Policy, `rule 5 "seated"`) {
		t.Errorf("usage policy %q", u.Policy)
	}
	r := startHelper(t, d, noSeatUID, noSeatUID).do("alloc", "system", 4096, 1)
	if protocol.Code(r.Code) != protocol.CodeDenied || !strings.Contains(r.Error, "logind reports no active local session for uid 1003") {
		t.Fatalf("remote session: %+v", r)
	}
	// The session ends (a VT switch): within the cache time, denied.
	fake.SetSessions()
	time.Sleep(100 * time.Millisecond)
	if r := p.do("alloc", "system", 4096, 1); protocol.Code(r.Code) != protocol.CodeDenied {
		t.Fatalf("after the session ended: %+v", r)
	}
	if fake.Calls() == 0 {
		t.Error("logind was never asked")
	}
}

// The admin socket: root lists the ledger, other uids are refused.
func TestE2EAdminSocket(t *testing.T) {
	d := startDaemon(t)
	p := startHelper(t, d, quotaUID, quotaUID)
	ids := p.must("alloc", "system", 8192, 2).IDs
	es := listLedger(t, d)
	var mine []daemon.LedgerEntry
	for _, e := range es {
		if e.UID == quotaUID {
			mine = append(mine, e)
		}
	}
	if len(mine) != 2 || mine[0].ID != ids[0] || mine[0].Size != 8192 || mine[0].Heap != "system" || len(mine[0].Holders) != 1 ||
		mine[0].Holders[0].PID != int32(p.cmd.Process.Pid) || !strings.HasPrefix(mine[0].Name, "heapd:uid1000:") {
		t.Errorf("ledger %+v", mine)
	}
	fi, err := os.Stat(d.AdminSocket())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket %v %v", fi, err)
	}
}

func listLedger(t *testing.T, d *daemontest.Daemon) []daemon.LedgerEntry {
	t.Helper()
	c, err := net.Dial("unix", d.AdminSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, `{"request":"ledger"}`)
	var rep daemon.AdminReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if rep.Error != "" || !rep.Accounted {
		t.Fatalf("admin: %+v", rep)
	}
	return rep.Buffers
}

func ledgerEntry(t *testing.T, d *daemontest.Daemon, id uint64) *daemon.LedgerEntry {
	for _, e := range listLedger(t, d) {
		if e.ID == id {
			return &e
		}
	}
	return nil
}
