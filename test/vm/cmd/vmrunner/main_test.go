//go:build linux

package main

import (
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
