package contrib

import (
	"testing"

	"github.com/heapd/heapd/internal/daemon/daemontest"
)

// daemontest.Main: the testutil checks, and removal of the heapd binary
// TestConfigurationDocumentsEveryFlag builds.
func TestMain(m *testing.M) { daemontest.Main(m) }
