package logindtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"

	"github.com/heapd/heapd/internal/logind"
)

// RequireEnv, set to 1, turns a missing dbus-daemon into a failure.
const RequireEnv = "HEAPD_REQUIRE_DBUS"

// busConfig lets every uid connect, own names and call anything: the bus
// is private to one test.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>heapd-test</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// StartBus starts a private dbus-daemon for the test and returns its
// address; the daemon is stopped when the test ends. It returns "" in the
// VM tier, where there is no dbus-daemon (see the package doc).
func StartBus(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		hint := "dbus-daemon not found: install Debian's dbus-daemon package (apt-get install dbus-daemon) to test session rules against a fake logind"
		switch {
		case os.Getenv(RequireEnv) == "1":
			t.Fatalf("%s is set: %s", RequireEnv, hint)
		case os.Getenv("HEAPD_VM") == "1":
			t.Logf("VM tier: no D-Bus in the guest; testing the absent-logind case instead (%s)", hint)
			return ""
		}
		t.Skip(hint)
	}
	dir := t.TempDir()
	// Other uids (test children) must reach the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bus")
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, busConfig, sock), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address=1", "--nosyslog")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case addr, ok := <-lines:
		if !ok || addr == "" {
			<-done
			t.Fatalf("dbus-daemon printed no address: %s", stderr.String())
		}
		return addr
	case <-time.After(10 * time.Second):
		t.Fatalf("dbus-daemon did not start: %s", stderr.String())
	}
	return ""
}

// Session is one fake logind session.
type Session struct {
	ID     string
	UID    uint32
	User   string
	Seat   string // "" for none
	Active bool
	Remote bool
	Class  string // "user" if empty
}

// Logind is a fake logind on a bus: Manager.ListSessions and each
// session's properties, the part of the API package logind uses.
type Logind struct {
	conn *dbus.Conn

	mu       sync.Mutex
	sessions []Session
	calls    int
}

// Serve connects to the bus at addr, takes org.freedesktop.login1 and
// serves sessions until the test ends.
func Serve(t testing.TB, addr string, sessions ...Session) *Logind {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("fake logind: connect %s: %v", addr, err)
	}
	l := &Logind{conn: conn}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Export(manager{l}, logind.ManagerPath, logind.ManagerInterface); err != nil {
		t.Fatal(err)
	}
	l.SetSessions(sessions...)
	reply, err := conn.RequestName(logind.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake logind: request name: %v %v", reply, err)
	}
	return l
}

// SetSessions replaces the sessions logind reports.
func (l *Logind) SetSessions(sessions ...Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sessions {
		path := sessionPath(s.ID)
		l.conn.Export(nil, path, "org.freedesktop.DBus.Properties")
	}
	l.sessions = append([]Session(nil), sessions...)
	for _, s := range l.sessions {
		class := s.Class
		if class == "" {
			class = "user"
		}
		seat := struct {
			ID   string
			Path dbus.ObjectPath
		}{s.Seat, "/org/freedesktop/login1/seat/" + dbus.ObjectPath(escape(s.Seat))}
		if s.Seat == "" {
			seat.Path = "/"
		}
		_, err := prop.Export(l.conn, sessionPath(s.ID), prop.Map{
			logind.SessionInterface: {
				"Id":     {Value: s.ID},
				"Active": {Value: s.Active},
				"Remote": {Value: s.Remote},
				"Class":  {Value: class},
				"Name":   {Value: s.User},
				"Seat":   {Value: seat},
				"User": {Value: struct {
					UID  uint32
					Path dbus.ObjectPath
				}{s.UID, dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/login1/user/_%d", s.UID))}},
			},
		})
		if err != nil {
			panic(err)
		}
	}
}

// Calls returns how many times ListSessions was called.
func (l *Logind) Calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

func sessionPath(id string) dbus.ObjectPath {
	return dbus.ObjectPath("/org/freedesktop/login1/session/" + escape(id))
}

// escape makes s a valid object path element (logind's bus-label escaping,
// simplified).
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

type manager struct{ l *Logind }

type sessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// ListSessions is org.freedesktop.login1.Manager.ListSessions: a(susso).
func (m manager) ListSessions() ([]sessionEntry, *dbus.Error) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	m.l.calls++
	out := []sessionEntry{}
	for _, s := range m.l.sessions {
		out = append(out, sessionEntry{s.ID, s.UID, s.User, s.Seat, sessionPath(s.ID)})
	}
	return out, nil
}
