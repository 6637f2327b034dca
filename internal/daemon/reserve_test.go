package daemon

import (
	"sync"
	"testing"
)

func TestReserveFD(t *testing.T) {
	var r reserveFD
	if r.give() {
		t.Fatal("give on the zero value reported a held fd")
	}
	if !r.take() {
		t.Fatal("take failed")
	}
	if !r.take() {
		t.Fatal("take of a held reserve reported none")
	}
	fd := r.fd
	if !r.give() || r.give() {
		t.Fatal("give: want true once, then false")
	}
	if !r.take() {
		t.Fatal("take after give failed")
	}
	if r.fd != fd {
		t.Logf("reserve fd %d after give/take, was %d", r.fd, fd)
	}
	r.stop()
	if r.take() || r.ok {
		t.Fatal("take after stop opened the reserve again")
	}
}

// Connections that close concurrently all try to take the reserve back:
// at most one fd may be held.
func TestReserveFDConcurrent(t *testing.T) {
	var r reserveFD
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				r.take()
				r.give()
				r.take()
			}
		}()
	}
	wg.Wait()
	r.stop()
}
