package scan

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// kernels are the captures in testdata, made in the VM tier (see capture).
var kernels = []string{"linux-6.1", "linux-6.12"}

// readCapture returns the files of testdata/<kernel>.txtar by name. The
// format is txtar's: a comment, then "-- name --" lines each starting a
// file.
func readCapture(t testing.TB, kernel string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", kernel+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	var name string
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte{'\n'})
		if n, ok := bytes.CutPrefix(line, []byte("-- ")); ok {
			if n, ok := bytes.CutSuffix(n, []byte(" --")); ok {
				name = string(n)
				files[name] = []byte{}
				data = rest
				continue
			}
		}
		if name != "" {
			files[name] = append(files[name], line...)
			files[name] = append(files[name], '\n')
		}
		data = rest
	}
	return files
}
