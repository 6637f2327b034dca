package adversarial

import (
	"os"
	"testing"

	"github.com/heapd/heapd/internal/daemon/daemontest"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	daemontest.Main(m)
}
