package contrib

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/daemon/daemontest"
)

// docs/configuration.md documents every flag heapd has, with the default
// heapd --help prints. (The other direction — a documented flag that heapd
// lacks — is for review: the doc may describe flags about to be wired.)
func TestConfigurationDocumentsEveryFlag(t *testing.T) {
	var help bytes.Buffer
	cmd := exec.Command(daemontest.Binary(t), "--help")
	cmd.Stdout, cmd.Stderr = &help, &help
	if err := cmd.Run(); err != nil {
		t.Fatalf("heapd --help: %v\n%s", err, help.String())
	}
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for line := range strings.Lines(string(doc)) {
		if m := regexp.MustCompile("^\\| `--([a-z0-9-]+)").FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	// flag.PrintDefaults: "  -name type\n    \tusage (default x)".
	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	def := regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`)
	lines := strings.Split(help.String(), "\n")
	n := 0
	for i, line := range lines {
		m := flagLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		name := m[1]
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/configuration.md does not document --%s", name)
			continue
		}
		usage := line
		if i+1 < len(lines) {
			usage += lines[i+1]
		}
		if d := def.FindStringSubmatch(usage); d != nil && !strings.Contains(row, "`"+d[1]+"`") {
			t.Errorf("docs/configuration.md: --%s: default %q not in its row:\n%s", name, d[1], row)
		}
	}
	if n == 0 {
		t.Fatalf("no flags found in heapd --help:\n%s", help.String())
	}
	if _, ok := rows["help"]; !ok {
		t.Error("docs/configuration.md does not document --help")
	}
}
