package uevent

import (
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	testutil.Main(m)
}
