package dmaheap

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// treeFile is one entry of a txtar tree (see testdata/README.md).
type treeFile struct {
	path, link string
	data       []byte
}

// parseTree parses a txtar archive: a comment, then "-- name --" headers
// each followed by the file's content. "-- name -> target --" is a link.
func parseTree(data []byte) (comment string, files []treeFile) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var cur *treeFile
	var commentBuf bytes.Buffer
	for _, l := range lines {
		s := strings.TrimRight(string(l), "\n")
		if strings.HasPrefix(s, "-- ") && strings.HasSuffix(s, " --") && len(s) >= 6 {
			name := strings.TrimSuffix(strings.TrimPrefix(s, "-- "), " --")
			f := treeFile{path: name}
			if p, target, ok := strings.Cut(name, " -> "); ok {
				f.path, f.link = p, target
			}
			files = append(files, f)
			cur = &files[len(files)-1]
			continue
		}
		if cur == nil {
			commentBuf.Write(l)
		} else {
			cur.data = append(cur.data, l...)
		}
	}
	for i := range files {
		if bytes.Contains(files[i].data, []byte(`\0`)) {
			files[i].data = bytes.ReplaceAll(bytes.TrimSuffix(files[i].data, []byte("\n")), []byte(`\0`), []byte{0})
		}
	}
	return commentBuf.String(), files
}

// writeTree unpacks testdata/trees/<name>.txtar under dir.
func writeTree(t testing.TB, name, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "trees", name+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	_, files := parseTree(data)
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else {
			err = os.WriteFile(p, f.data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
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
