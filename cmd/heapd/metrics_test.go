package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon/daemontest"
)

// heapd --metrics-listen unix:PATH serves Prometheus text that counts what
// the daemon did: an allocation and a refusal show up by heap and result.
func TestMetricsEndpoint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "metrics")
	d := daemontest.Start(t, &daemontest.Options{Args: []string{"--metrics-listen", "unix:" + sock}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 4096})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := c.Allocate(ctx, client.Request{Heap: "no-such-heap", Size: 4096}); err == nil {
		t.Fatal("allocation from an unknown heap succeeded")
	}

	text, err := scrape(ctx, sock)
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, d.Log())
	}
	for _, want := range []string{
		`heapd_allocations_total{heap="system",result="ok"} 1`,
		`heapd_heap_info{backend=`,
		`heapd_build_info{`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(text, `result="unknown_heap"`) {
		t.Errorf("the refused allocation is not counted by result:\n%s", grep(text, "heapd_allocations_total"))
	}
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// scrape fetches the metrics page from heapd's metrics socket.
func scrape(ctx context.Context, sock string) (string, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://heapd/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// sample returns the value of the series name{labels...} in a Prometheus
// text page (labels as `key="value"`, in any order), and whether it is
// there.
func sample(t *testing.T, text, name string, labels ...string) (float64, bool) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(l, name+"{")
		if !ok {
			continue
		}
		set, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		have := map[string]bool{}
		for _, kv := range strings.Split(set, ",") {
			have[kv] = true
		}
		match := true
		for _, kv := range labels {
			match = match && have[kv]
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		return v, true
	}
	return 0, false
}

// heapd_live_* and heapd_quota_* follow the ledger: after an allocation
// they show the bytes charged (whole pages) against the policy's quota,
// and once the client closes the buffer and the ledger sees it freed,
// live is gone and quota use is back to zero.
func TestMetricsLiveAndQuota(t *testing.T) {
	uid := strconv.Itoa(os.Getuid())
	policy := `
[ledger]
release_interval = "50ms"

[[rule]]
name = "me"
uid = [` + uid + `]
heaps = ["*"]
[rule.quota]
bytes = "1MiB"
buffers = 10
[rule.quota.emulated]
bytes = "512KiB"
buffers = 5
[rule.quota.contiguous]
bytes = "256KiB"
buffers = 2
`
	sock := filepath.Join(t.TempDir(), "metrics")
	d := daemontest.Start(t, &daemontest.Options{Policy: policy, Args: []string{"--metrics-listen", "unix:" + sock}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &client.Client{Socket: d.Socket}
	defer c.Close()
	page := int64(os.Getpagesize())
	a, err := c.Allocate(ctx, client.Request{Heap: "system", Size: 2*page + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := c.Allocate(ctx, client.Request{Heap: "system", Size: page})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	// The heap's class: emulated on a machine without kernel heaps, else system.
	class := "system"
	if a.Emulated() {
		class = "emulated"
	}

	type series struct {
		name   string
		labels []string
	}
	want := func(text string, s series, v float64) {
		t.Helper()
		got, ok := sample(t, text, s.name, s.labels...)
		if !ok {
			t.Errorf("no series %s%v in:\n%s", s.name, s.labels, grep(text, "heapd_"))
		} else if got != v {
			t.Errorf("%s%v = %v, want %v", s.name, s.labels, got, v)
		}
	}
	var (
		liveBytes   = series{"heapd_live_bytes", []string{`heap="system"`, `uid="` + uid + `"`}}
		liveBufs    = series{"heapd_live_buffers", []string{`heap="system"`, `uid="` + uid + `"`}}
		usedTotal   = series{"heapd_quota_used_bytes", []string{`class="total"`, `uid="` + uid + `"`}}
		bufsTotal   = series{"heapd_quota_used_buffers", []string{`class="total"`, `uid="` + uid + `"`}}
		usedClass   = series{"heapd_quota_used_bytes", []string{`class="` + class + `"`, `uid="` + uid + `"`}}
		usedContig  = series{"heapd_quota_used_bytes", []string{`class="contiguous"`, `uid="` + uid + `"`}}
		limitTotal  = series{"heapd_quota_limit_bytes", []string{`class="total"`, `uid="` + uid + `"`}}
		limitBufs   = series{"heapd_quota_limit_buffers", []string{`class="total"`, `uid="` + uid + `"`}}
		limitContig = series{"heapd_quota_limit_bytes", []string{`class="contiguous"`, `uid="` + uid + `"`}}
	)

	// b is closed, but may not be released yet: wait until the ledger
	// has seen that, then a alone is live (3 pages).
	held := float64(3 * page)
	// scrapeUntil scrapes until done says the page is the one awaited, or
	// 10 s passed (then the checks below say what is wrong).
	scrapeUntil := func(done func(text string) bool) string {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			text, err := scrape(ctx, sock)
			if err != nil {
				t.Fatalf("scrape: %v\n%s", err, d.Log())
			}
			if done(text) || time.Now().After(deadline) {
				return text
			}
		}
	}
	text := scrapeUntil(func(text string) bool {
		v, _ := sample(t, text, liveBufs.name, liveBufs.labels...)
		return v == 1
	})
	want(text, liveBytes, held)
	want(text, liveBufs, 1)
	want(text, usedTotal, held)
	want(text, bufsTotal, 1)
	want(text, usedClass, held)
	want(text, usedContig, 0)
	want(text, limitTotal, 1<<20)
	want(text, limitBufs, 10)
	want(text, limitContig, 256<<10)

	// Release: the live series disappear, quota use drops to zero and the
	// limits stay.
	a.Close()
	text = scrapeUntil(func(text string) bool {
		_, ok := sample(t, text, liveBytes.name, liveBytes.labels...)
		return !ok
	})
	if _, ok := sample(t, text, liveBytes.name, liveBytes.labels...); ok {
		t.Errorf("heapd_live_bytes still there after release:\n%s", grep(text, "heapd_live"))
	}
	want(text, usedTotal, 0)
	want(text, bufsTotal, 0)
	want(text, usedClass, 0)
	want(text, limitTotal, 1<<20)
}
