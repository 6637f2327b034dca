package contrib

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/testutil"
)

// requireTools makes a missing tool a failure (CI, once it installs them).
const requireTools = "HEAPD_REQUIRE_CONTRIB_TOOLS"

// need returns the path of tool, or "" when the test cannot run here: it
// skips with a hint saying which package has the tool (fails under
// requireTools). In the VM tier, whose guest has no shell and no systemd,
// it returns "" without skipping: these are checks of files, made on the
// host tier, and the VM tier counts every skip as a failure.
func need(t *testing.T, tool, hint string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: %s", tool, hint)
	switch {
	case os.Getenv(requireTools) == "1":
		t.Fatalf("%s (%s=1)", msg, requireTools)
	case testutil.Required():
		t.Logf("%s; a host-tier check, not run in the VM tier", msg)
	default:
		t.Skip(msg)
	}
	return ""
}

// unit is a parsed unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) want(t *testing.T, section, key string, values ...string) {
	t.Helper()
	if got := u[section][key]; !slices.Equal(got, values) {
		t.Errorf("[%s] %s = %q, want %q", section, key, got, values)
	}
}

// The units say what docs/operating.md says, and agree with the daemon's
// defaults.
func TestSystemdUnitContent(t *testing.T) {
	sock := parseUnit(t, "systemd/heapd.socket")
	sock.want(t, "Socket", "ListenSequentialPacket", daemon.DefaultSocket)
	sock.want(t, "Socket", "SocketMode", fmt.Sprintf("%04o", daemon.SocketMode))
	sock.want(t, "Install", "WantedBy", "sockets.target")

	svc := parseUnit(t, "systemd/heapd.service")
	for _, kv := range [][]string{
		{"Type", "notify"},
		{"ExecStart", "/usr/bin/heapd $HEAPD_OPTS"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"NoNewPrivileges", "yes"},
		{"RestrictAddressFamilies", "AF_UNIX AF_NETLINK"},
		{"DevicePolicy", "closed"},
		{"DeviceAllow", "char-dma_heap rw", "char-drm rw", "/dev/udmabuf rw"},
		{"CapabilityBoundingSet", "CAP_SYS_PTRACE"},
		{"RuntimeDirectory", "heapd"},
		{"RuntimeDirectoryPreserve", "yes"},
	} {
		svc.want(t, "Service", kv[0], kv[1:]...)
	}
	// /run/heapd is the service's RuntimeDirectory: the socket must be in it.
	if filepath.Dir(daemon.DefaultSocket) != "/run/heapd" {
		t.Errorf("daemon.DefaultSocket %s is not in /run/heapd, the RuntimeDirectory", daemon.DefaultSocket)
	}
	// These would hide what heapd reads (docs/operating.md says why).
	for _, k := range []string{"ProtectProc", "ProcSubset", "PrivateDevices", "PrivateUsers", "PrivateNetwork"} {
		if v := svc["Service"][k]; v != nil {
			t.Errorf("[Service] %s=%q breaks heapd", k, v)
		}
	}
}

// stageUnits copies the units to a directory of their own with ExecStart
// pointing to a stub, because systemd-analyze verify checks that the
// binary exists and a test machine need not have heapd installed.
func stageUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	stub := filepath.Join(dir, "heapd")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"heapd.socket", "heapd.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/bin/heapd", stub)
		if _, err := os.Stat("/bin/kill"); err != nil {
			s = strings.ReplaceAll(s, "/bin/kill", stub)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// systemd's own verifier accepts the units without a single warning (it
// exits 0 on unknown keys and bad values, so any output is a failure).
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := need(t, "systemd-analyze", "install Debian's systemd package (apt-get install systemd) to verify contrib/systemd")
	if sa == "" {
		return
	}
	dir := stageUnits(t)
	cmd := exec.Command(sa, "verify", "--man=no", "./heapd.socket", "./heapd.service")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The hardening keeps systemd's exposure score at "OK" (2.1 when written;
// 2.5 leaves room for newer systemd versions that score more settings).
func TestSystemdAnalyzeSecurity(t *testing.T) {
	sa := need(t, "systemd-analyze", "install Debian's systemd package (apt-get install systemd) to score contrib/systemd")
	if sa == "" {
		return
	}
	dir := stageUnits(t)
	cmd := exec.Command(sa, "security", "--offline=yes", "--man=no", "--no-pager", "--threshold=25", "./heapd.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --threshold=25 (exposure 2.5): %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`exposure level for heapd.service: ([0-9.]+)`).FindSubmatch(out); m != nil {
		t.Logf("exposure %s", m[1])
	}
}

// shells that can check POSIX sh syntax here: sh always; dash and busybox
// (Alpine's /bin/sh) when present. None: see need.
func shells(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	for _, sh := range [][]string{{"sh"}, {"dash"}, {"busybox", "sh"}} {
		if _, err := exec.LookPath(sh[0]); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		need(t, "sh", "a POSIX shell checks contrib/openrc")
	}
	return out
}

func TestOpenRCSyntax(t *testing.T) {
	for _, f := range []string{"openrc/heapd", "openrc/heapd.confd"} {
		for _, sh := range shells(t) {
			cmd := exec.Command(sh[0], append(sh[1:], "-n", f)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", strings.Join(sh, " "), f, err, out)
			}
		}
	}
	b, err := os.ReadFile("openrc/heapd")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("#!/sbin/openrc-run\n")) {
		t.Error("openrc/heapd does not start with #!/sbin/openrc-run")
	}
	// (The VM tier's source mirror need not keep modes.)
	if st, err := os.Stat("openrc/heapd"); err == nil && st.Mode()&0o111 == 0 && !testutil.Required() {
		t.Error("openrc/heapd is not executable")
	}
}

// Sourced the way openrc-run sources it (conf.d first, then the script),
// with OpenRC's helpers stubbed, the script sets what OpenRC reads.
func TestOpenRCVariables(t *testing.T) {
	script := `
need() { echo "need $*"; }
after() { echo "after $*"; }
use() { echo "use $*"; }
RC_SVCNAME=heapd
. ./openrc/heapd.confd
. ./openrc/heapd
echo "command=$command"
echo "command_args=$command_args"
echo "supervisor=$supervisor"
echo "extra_started_commands=$extra_started_commands"
echo "error_logger=$error_logger"
depend
command -v start_pre >/dev/null && echo "start_pre defined"
command -v reload >/dev/null && echo "reload defined"
`
	for _, sh := range shells(t) {
		cmd := exec.Command(sh[0], append(sh[1:], "-c", script)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", sh, err, out)
		}
		got := string(out)
		for _, want := range []string{
			"command=/usr/bin/heapd\n",
			"command_args=--socket " + daemon.DefaultSocket + " \n",
			"supervisor=supervise-daemon\n",
			"extra_started_commands=reload\n",
			"error_logger=logger -t heapd -p daemon.info\n",
			"need localmount\n",
			"use logger\n",
			"start_pre defined\n",
			"reload defined\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: no %q in\n%s", sh, want, got)
			}
		}
	}
}

// shellcheck, where installed, finds nothing in the OpenRC files.
func TestShellcheck(t *testing.T) {
	sc := need(t, "shellcheck", "apt-get install shellcheck")
	if sc == "" {
		return
	}
	// SC2034: OpenRC reads the variables the script sets.
	cmd := exec.Command(sc, "--shell=sh", "--exclude=SC2034", "openrc/heapd", "openrc/heapd.confd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// The udev rule parses as udev reads it: comma-separated KEY op "value"
// pairs, match keys with == or !=, assignments with = += :=, and the
// groups and modes it sets are the documented ones. (udevadm verify, from
// systemd 253, is not in Debian 12.)
func TestUdevRule(t *testing.T) {
	const path = "udev/70-heapd-dma-heap.rules"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pair := regexp.MustCompile(`^\s*([A-Z_]+)(\{[^}]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*$`)
	match := map[string]bool{"SUBSYSTEM": true, "KERNEL": true, "ACTION": true, "ATTR": true}
	assign := map[string]bool{"GROUP": true, "MODE": true, "OWNER": true, "TAG": true}
	subsystems := map[string]bool{}
	rules := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		rules++
		var group, mode string
		for _, p := range strings.Split(line, ",") {
			m := pair.FindStringSubmatch(p)
			if m == nil {
				t.Errorf("%s:%d: %q is not KEY op \"value\"", path, n, p)
				continue
			}
			key, op, val := m[1], m[3], m[4]
			isMatch := op == "==" || op == "!="
			switch {
			case isMatch && !match[key], !isMatch && !assign[key]:
				t.Errorf("%s:%d: %s%s is not a %s key here", path, n, key, op, map[bool]string{true: "match", false: "assignment"}[isMatch])
			}
			switch key {
			case "SUBSYSTEM":
				subsystems[val] = true
			case "GROUP":
				group = val
			case "MODE":
				mode = val
			}
		}
		if group != "video" || mode != "0660" {
			t.Errorf("%s:%d: GROUP=%q MODE=%q, docs/install.md says video 0660", path, n, group, mode)
		}
	}
	if rules == 0 || !subsystems["dma_heap"] || !subsystems["misc"] {
		t.Errorf("%s: %d rules, subsystems %v: want dma_heap and misc (udmabuf)", path, rules, subsystems)
	}
}
