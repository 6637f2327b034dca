package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
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

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://heapd/metrics", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, d.Log())
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
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
