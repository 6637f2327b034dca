package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TreeFile is one entry of a txtar tree: a file with data, or a symbolic
// link when Link is set.
type TreeFile struct {
	Path, Link string
	Data       []byte
}

// ParseTree parses a txtar archive of a captured /dev, /sys or /proc tree:
// a comment, then "-- name --" headers each followed by the file's content.
// "-- name -> target --" is a symbolic link, and `\0` in a content stands for
// a NUL byte (device-tree strings).
func ParseTree(data []byte) (comment string, files []TreeFile) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var cur *TreeFile
	var commentBuf bytes.Buffer
	for _, l := range lines {
		s := strings.TrimRight(string(l), "\n")
		if strings.HasPrefix(s, "-- ") && strings.HasSuffix(s, " --") && len(s) >= 6 {
			name := strings.TrimSuffix(strings.TrimPrefix(s, "-- "), " --")
			f := TreeFile{Path: name}
			if p, target, ok := strings.Cut(name, " -> "); ok {
				f.Path, f.Link = p, target
			}
			files = append(files, f)
			cur = &files[len(files)-1]
			continue
		}
		if cur == nil {
			commentBuf.Write(l)
		} else {
			cur.Data = append(cur.Data, l...)
		}
	}
	for i := range files {
		if bytes.Contains(files[i].Data, []byte(`\0`)) {
			files[i].Data = bytes.ReplaceAll(bytes.TrimSuffix(files[i].Data, []byte("\n")), []byte(`\0`), []byte{0})
		}
	}
	return commentBuf.String(), files
}

// WriteTree unpacks the txtar tree at path under dir.
func WriteTree(t testing.TB, path, dir string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, files := ParseTree(data)
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if f.Link != "" {
			err = os.Symlink(f.Link, p)
		} else {
			err = os.WriteFile(p, f.Data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
