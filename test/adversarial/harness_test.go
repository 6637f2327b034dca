package adversarial

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

// suitePolicy lets every uid allocate from every heap, without quota, so
// that the attacks reach the allocation path and the isolation test can
// use every heap as an unprivileged user.
const suitePolicy = `# test/adversarial
[ledger]
release_interval = "100ms"

[[rule]]
name = "everyone"
heaps = ["*"]
`

// Bounds of the health check. They are generous because the suite runs
// under -race on a shared 2-core machine; they catch a daemon that hangs,
// leaks or balloons, not one that is a little slow (speed is measured by
// benchmarks).
const (
	healthyBound = 5 * time.Second  // one well-behaved round trip
	rssSlack     = 256 << 20        // RSS growth over the baseline
	settleTime   = 10 * time.Second // for goroutines and the ledger to settle
)

// target is a heapd under attack with the probes of its health.
type target struct {
	d       *daemontest.Daemon
	hc      *http.Client
	baseFDs map[int]string
	baseG   int
	baseRSS int64
	baseLat time.Duration
	peakRSS int64
}

// start runs heapd with the suite's policy and a metrics endpoint (for
// go_goroutines), makes a few healthy round trips so that what heapd
// creates lazily is in the baseline, and measures the baseline.
func start(t *testing.T, args ...string) *target {
	t.Helper()
	testutil.NeedRoot(t)
	metrics := filepath.Join(daemontest.TempDir(t), "metrics")
	d := daemontest.Start(t, &daemontest.Options{
		Policy: suitePolicy,
		Args:   append([]string{"--metrics-listen", "unix:" + metrics}, args...),
	})
	tg := &target{d: d, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", metrics)
		}},
	}}
	t.Cleanup(tg.hc.CloseIdleConnections)
	var lats []time.Duration
	for range 5 {
		lats = append(lats, tg.healthy(t))
	}
	slices.Sort(lats)
	tg.baseLat = lats[len(lats)/2]
	tg.waitLedgerEmpty(t)
	tg.baseG = tg.stableGoroutines(t)
	tg.baseFDs = d.Baseline()
	tg.baseRSS = tg.rss(t)
	tg.peakRSS = tg.baseRSS
	t.Logf("baseline: healthy round trip %v, %d fds, %d goroutines, RSS %d MiB, %d threads",
		tg.baseLat, len(tg.baseFDs), tg.baseG, tg.baseRSS>>20, tg.threads())
	return tg
}

// healthy is a well-behaved client: connect, list the heaps, allocate
// 4 KiB from system, check the buffer, free it, disconnect. It returns how
// long that took.
func (tg *target) healthy(t testing.TB) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	c := &client.Client{Socket: tg.d.Socket}
	defer c.Close()
	heaps, _, err := c.Heaps(ctx)
	if err != nil {
		t.Fatalf("a well-behaved client cannot list heaps: %v\nheapd log:\n%s", err, tail(tg.d.Log()))
	}
	if len(heaps) == 0 {
		t.Fatal("heapd lists no heap")
	}
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 4096})
	if err != nil {
		t.Fatalf("a well-behaved client cannot allocate: %v\nheapd log:\n%s", err, tail(tg.d.Log()))
	}
	defer a.Close()
	if len(a.Buffers) != 1 || a.Size < 4096 || a.Buffers[0].Size() < 4096 {
		t.Fatalf("allocation of 4096 bytes gave %+v", a)
	}
	a.Close()
	c.Close()
	return time.Since(begin)
}

// check is run after each attack, once the attacker is gone: heapd
// answers a well-behaved client in bounded time, the ledger is empty, the
// goroutines and fds are back to the baseline and RSS stayed bounded.
func (tg *target) check(t *testing.T) {
	t.Helper()
	select {
	case <-tg.d.Done():
		t.Fatalf("heapd died: %v\nlog:\n%s", tg.d.Err(), tail(tg.d.Log()))
	default:
	}
	lat := tg.healthy(t)
	if lat > healthyBound {
		t.Errorf("a well-behaved round trip took %v after the attack (baseline %v, bound %v)", lat, tg.baseLat, healthyBound)
	}
	tg.waitLedgerEmpty(t)
	g := tg.waitGoroutines(t)
	tg.waitFDs(t)
	rss := tg.rss(t)
	tg.peakRSS = max(tg.peakRSS, rss)
	if rss > tg.baseRSS+rssSlack {
		t.Errorf("heapd's RSS grew from %d MiB to %d MiB", tg.baseRSS>>20, rss>>20)
	}
	t.Logf("after the attack: healthy round trip %v (%.1fx baseline), %d goroutines (baseline %d), %d fds (baseline %d), RSS %d MiB (baseline %d), %d threads",
		lat, float64(lat)/float64(tg.baseLat), g, tg.baseG, len(tg.d.FDs()), len(tg.baseFDs), rss>>20, tg.baseRSS>>20, tg.threads())
}

// goroutines scrapes heapd's go_goroutines.
func (tg *target) goroutines(t testing.TB) int {
	t.Helper()
	resp, err := tg.hc.Get("http://heapd/metrics")
	if err != nil {
		t.Fatalf("scraping heapd's metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_goroutines %q: %v", v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("heapd's metrics have no go_goroutines (%v)", sc.Err())
	return 0
}

// stableGoroutines waits for two equal readings in a row.
func (tg *target) stableGoroutines(t testing.TB) int {
	prev := tg.goroutines(t)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		cur := tg.goroutines(t)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	return prev
}

// waitGoroutines waits for heapd's goroutines to come back to the
// baseline and fails the test if they do not.
func (tg *target) waitGoroutines(t testing.TB) int {
	t.Helper()
	var g int
	for deadline := time.Now().Add(settleTime); ; time.Sleep(50 * time.Millisecond) {
		g = tg.goroutines(t)
		if g <= tg.baseG || time.Now().After(deadline) {
			break
		}
	}
	if g > tg.baseG {
		t.Errorf("heapd runs %d goroutines %v after the attack, %d before", g, settleTime, tg.baseG)
	}
	return g
}

// ledger lists heapd's live buffers through the admin socket.
func (tg *target) ledger(t testing.TB) []daemon.LedgerEntry {
	t.Helper()
	c, err := net.Dial("unix", tg.d.AdminSocket())
	if err != nil {
		t.Fatalf("admin socket: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, `{"request":"ledger"}`); err != nil {
		t.Fatal(err)
	}
	var rep daemon.AdminReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		t.Fatalf("admin socket: %v", err)
	}
	if rep.Error != "" || !rep.Accounted {
		t.Fatalf("admin socket: %+v", rep)
	}
	return rep.Buffers
}

// waitLedgerEmpty waits until every buffer heapd handed out is released.
func (tg *target) waitLedgerEmpty(t testing.TB) {
	t.Helper()
	var live []daemon.LedgerEntry
	for deadline := time.Now().Add(settleTime); ; time.Sleep(50 * time.Millisecond) {
		live = tg.ledger(t)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Errorf("the ledger still holds %d buffers %v after every client left, e.g. %+v", len(live), settleTime, live[0])
}

// rss is heapd's resident set in bytes.
func (tg *target) rss(t testing.TB) int64 {
	t.Helper()
	kb, err := procStatus(tg.d.PID(), "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	return kb << 10
}

func (tg *target) threads() int64 {
	n, _ := procStatus(tg.d.PID(), "Threads")
	return n
}

// procStatus reads one number from /proc/PID/status (kB for sizes).
func procStatus(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}

func tail(log string) string {
	const n = 4000
	if len(log) > n {
		return "…" + log[len(log)-n:]
	}
	return log
}

// raw is a client that speaks the wire format by hand.
type raw struct {
	pc *protocol.Conn
	uc *net.UnixConn
}

func dialRaw(sock string) (*raw, error) {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return &raw{pc: protocol.NewConn(uc), uc: uc}, nil
}

func mustDial(t testing.TB, sock string) *raw {
	t.Helper()
	r, err := dialRaw(sock)
	if err != nil {
		t.Fatalf("dial heapd: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (r *raw) Close() error { return r.pc.Close() }

// sendRaw sends one packet with fds.
func (r *raw) sendRaw(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_ = r.uc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _, err := r.uc.WriteMsgUnix(b, oob, nil)
	return err
}

func (r *raw) send(serial uint32, m protocol.Message, fds ...int) error {
	b, err := protocol.Encode(serial, m)
	if err != nil {
		return err
	}
	return r.sendRaw(b, fds...)
}

// recv reads one message, closing any fds it carries.
func (r *raw) recv(timeout time.Duration) (protocol.Header, protocol.Message, error) {
	_ = r.pc.SetReadDeadline(time.Now().Add(timeout))
	h, m, fds, err := r.pc.Recv()
	protocol.CloseFDs(fds)
	return h, m, err
}

var hello = &protocol.Hello{Major: protocol.VersionMajor, Minor: protocol.VersionMinor, Features: protocol.AllFeatures}

// hello does the handshake.
func (r *raw) hello(t testing.TB) {
	t.Helper()
	if err := r.send(1, hello); err != nil {
		t.Fatalf("send Hello: %v", err)
	}
	_, m, err := r.recv(10 * time.Second)
	if _, ok := m.(*protocol.HelloReply); !ok || err != nil {
		t.Fatalf("Hello: got %#v, %v", m, err)
	}
}

// expectError reads one message and checks it is an Error with one of
// codes.
func (r *raw) expectError(t testing.TB, what string, codes ...protocol.Code) *protocol.Error {
	t.Helper()
	_, m, err := r.recv(10 * time.Second)
	if err != nil {
		t.Errorf("%s: no answer, want %v: %v", what, codes, err)
		return nil
	}
	e, ok := m.(*protocol.Error)
	if !ok {
		t.Errorf("%s: got %s %+v, want Error %v", what, m.Type(), m, codes)
		return nil
	}
	if !slices.Contains(codes, e.Code) {
		t.Errorf("%s: got %v, want one of %v", what, e, codes)
	}
	return e
}

// expectClosed checks that heapd closed the connection (EOF or reset, not
// a timeout and not a message).
func (r *raw) expectClosed(t testing.TB, what string) {
	t.Helper()
	_, m, err := r.recv(10 * time.Second)
	if err == nil {
		t.Errorf("%s: connection still open, got %s %+v", what, m.Type(), m)
		return
	}
	if !isClosed(err) {
		t.Errorf("%s: want the connection closed, got %v", what, err)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// waitHangup waits until heapd hangs up on r, without reading r (for
// clients that never read). It reports whether that happened in time.
func (r *raw) waitHangup(timeout time.Duration) bool {
	rc, err := r.uc.SyscallConn()
	if err != nil {
		return false
	}
	deadline := time.Now().Add(timeout)
	hung := false
	_ = rc.Control(func(fd uintptr) {
		for time.Now().Before(deadline) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			n, err := unix.Poll(pfd, 100)
			if err == nil && n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0 {
				hung = true
				return
			}
		}
	})
	return hung
}

// waitFDs waits up to 5 s for heapd to hold the same files as at the
// baseline, compared as a multiset of targets: after running out of fds,
// heapd takes its spare fd back under whatever number is free then.
func (tg *target) waitFDs(t testing.TB) {
	t.Helper()
	targets := func(m map[int]string) []string {
		var l []string
		for _, v := range m {
			l = append(l, v)
		}
		slices.Sort(l)
		return l
	}
	want := targets(tg.baseFDs)
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = targets(tg.d.FDs()); slices.Equal(got, want) {
			return
		}
	}
	t.Errorf("heapd's fds did not return to the baseline:\n want %q\n got  %q", want, got)
}
