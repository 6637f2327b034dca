package dmaheap

import (
	"path/filepath"
	"testing"

	"github.com/heapd/heapd/internal/testutil"
)

// writeTree unpacks testdata/trees/<name>.txtar under dir.
func writeTree(t testing.TB, name, dir string) {
	t.Helper()
	testutil.WriteTree(t, filepath.Join("testdata", "trees", name+".txtar"), dir)
}

// loadTree unpacks a tree into a temporary directory and returns a Config
// that reads it.
func loadTree(t testing.TB, name string) *Config {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, name, dir)
	return treeConfig(dir)
}

func treeConfig(dir string) *Config {
	return &Config{
		DevDir:            filepath.Join(dir, "dev"),
		SysDir:            filepath.Join(dir, "sys"),
		ProcDir:           filepath.Join(dir, "proc"),
		AllowRegularNodes: true,
	}
}

// trees are every era in testdata/trees.
var trees = []string{"linux-6.1", "linux-6.1-devicetree", "linux-6.12", "linux-6.17", "linux-6.19", "rpi4", "rpi5", "vendor", "broken"}

func TestTreesPresent(t *testing.T) {
	ents, err := filepath.Glob(filepath.Join("testdata", "trees", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(trees) {
		t.Errorf("testdata/trees has %d trees, the tests know %d (%v): add the new one to trees", len(ents), len(trees), trees)
	}
}
