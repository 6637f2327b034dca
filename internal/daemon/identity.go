package daemon

import (
	"fmt"
	"slices"
	"strings"
)

// Identity is who a connection's peer is, as the kernel reports it through
// the socket. Nothing in it comes from what the client says.
type Identity struct {
	// UID and GID are the peer's effective ids at connect time
	// (SO_PEERCRED).
	UID, GID uint32
	// PID is the peer's pid in the daemon's pid namespace, 0 when the peer
	// is in a namespace the daemon cannot see.
	PID int32
	// Groups are the peer's supplementary groups at connect time
	// (SO_PEERGROUPS, else the Groups line of /proc/PID/status read under
	// a pidfd; see PIDSource).
	Groups []uint32
	// Comm is the peer's process name (/proc/PID/comm), "" if unknown.
	Comm string
	// PIDSource says how the pid was pinned while /proc was read:
	// "SO_PEERPIDFD" (Linux 6.5+: the pidfd comes from the socket itself),
	// "pidfd_open" (older kernels: opened from the pid, then re-checked),
	// or "" when no pidfd could be had and nothing was read from /proc.
	PIDSource string
}

// InGroup reports whether gid is the peer's primary or a supplementary
// group.
func (id *Identity) InGroup(gid uint32) bool {
	return id.GID == gid || slices.Contains(id.Groups, gid)
}

// String renders the identity for logs: "uid=1000 gid=1000 pid=42 comm=weston".
func (id *Identity) String() string {
	return fmt.Sprintf("uid=%d gid=%d pid=%d comm=%s", id.UID, id.GID, id.PID, id.Comm)
}

// BufferName is the debug name every buffer handed to id carries, so
// fdinfo and debugfs attribute it to its owner: "heapd:uid1000:weston",
// then ":label" when the client gave one and room is left, cut to
// maxLen bytes (31 for DMA-BUF names). The process name is reduced to
// [A-Za-z0-9._+-] so the uid and name can be parsed back.
func (id *Identity) BufferName(label string, maxLen int) string {
	comm := sanitizeName(id.Comm)
	if comm == "" {
		comm = "unknown"
	}
	name := fmt.Sprintf("heapd:uid%d:%s", id.UID, comm)
	if label != "" {
		name += ":" + sanitizeName(label)
	}
	if len(name) > maxLen {
		name = name[:maxLen]
	}
	return name
}

func sanitizeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '+', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
