package scan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

// kernels are the captures in testdata, made in the VM tier (see capture).
var kernels = []string{"linux-6.1", "linux-6.12"}

// readCapture returns the files of testdata/<kernel>.txtar by name.
func readCapture(t testing.TB, kernel string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", kernel+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	_, files := testutil.ParseTree(data)
	out := map[string][]byte{}
	for _, f := range files {
		out[f.Path] = f.Data
	}
	return out
}
