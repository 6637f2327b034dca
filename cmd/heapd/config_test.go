package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/policy"
)

func TestCheckConfig(t *testing.T) {
	out, err := heapd(t, "--check-config", "../../contrib/heapd.toml")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"policy ../../contrib/heapd.toml: 4 rule(s)", `rule 3 "graphics-groups"`, "128 MiB bytes, 128 buffers of contiguous memory"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[[rule]]\nname = \"a\"\nheaps = []\nquota_bytes = 5\n"), 0o644)
	if _, err := heapd(t, "--check-config", bad); err == nil || !strings.Contains(err.Error(), "bad.toml:4:1: unknown key rule.quota_bytes") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := heapd(t, "--check-config", filepath.Join(t.TempDir(), "none.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

// The default path missing: the built-in policy, said in the log. A
// missing --config file or a bad file: no start.
func TestStartPolicy(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	missing := filepath.Join(t.TempDir(), "heapd.toml")
	p, src, err := startPolicy(missing, false, log)
	if err != nil || p.Source != policy.DefaultSource || src != "" || !strings.Contains(logs.String(), "using the built-in default policy") {
		t.Errorf("default missing: %v %q %q\n%s", err, p.Source, src, logs.String())
	}
	if _, _, err := startPolicy(missing, true, log); err == nil {
		t.Error("a missing --config file accepted")
	}
	os.WriteFile(missing, []byte("[[rule]]\nname = \"a\"\n"), 0o644)
	if _, _, err := startPolicy(missing, false, log); err == nil || !strings.Contains(err.Error(), "has no heaps") {
		t.Errorf("a bad default file: %v", err)
	}
	os.WriteFile(missing, []byte("[[rule]]\nname = \"a\"\nheaps = [\"*\"]\n"), 0o644)
	p, src, err = startPolicy(missing, false, log)
	if err != nil || src != missing || len(p.Rules) != 1 {
		t.Errorf("a good file: %v %q %+v", err, src, p)
	}
}

// SIGHUP re-reads the file; a broken file keeps the policy in force.
func TestReloadPolicy(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	path := filepath.Join(t.TempDir(), "heapd.toml")
	os.WriteFile(path, []byte("[[rule]]\nname = \"a\"\nheaps = [\"*\"]\n"), 0o644)
	p, src, err := startPolicy(path, true, log)
	if err != nil {
		t.Fatal(err)
	}
	auth := policy.NewAuthorizer(p, nil)
	os.WriteFile(path, []byte("[[rule]]\nname = \"b\"\nheaps = [\"system\"]\n[[rule]]\nname = \"c\"\nheaps = []\n"), 0o644)
	reloadPolicy(auth, src, log)
	if len(auth.Policy().Rules) != 2 {
		t.Fatalf("not reloaded:\n%s", logs.String())
	}
	os.WriteFile(path, []byte("nonsense ="), 0o644)
	reloadPolicy(auth, src, log)
	if len(auth.Policy().Rules) != 2 || !strings.Contains(logs.String(), "policy not reloaded") {
		t.Errorf("a broken file replaced the policy:\n%s", logs.String())
	}
}
