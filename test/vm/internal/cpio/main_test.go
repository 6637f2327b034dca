//go:build linux

package cpio

import (
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
