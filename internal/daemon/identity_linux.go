package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/protocol"
)

// peer is what peerIdentity learns about a connection: the identity and
// the pidfd that pins the peer process (-1 if none), owned by the caller.
type peer struct {
	id    Identity
	pidfd int
}

// peerIdentity reads the peer's credentials from the socket. procRoot is
// "/proc" except in tests.
//
// The uid and gid come from SO_PEERCRED and cannot be forged. Everything
// read from /proc (the process name, and the groups on kernels without
// SO_PEERGROUPS) is read while a pidfd pins the process: SO_PEERPIDFD
// where the kernel has it (6.5+), else pidfd_open(pid). In the fallback
// the pid could in theory have been reused between connect and
// pidfd_open, so the /proc data is trusted only if the process's real or
// effective uid still equals the socket's uid, and the pidfd still refers
// to a live process after the read (so the pid was not recycled during
// it). Data that fails a check is dropped, never guessed.
func peerIdentity(uc *net.UnixConn, procRoot string) (peer, error) {
	p := peer{pidfd: -1}
	rc, err := uc.SyscallConn()
	if err != nil {
		return p, err
	}
	var (
		cred    *unix.Ucred
		credErr error
		groups  []uint32
		grpErr  error
		pidfd   = -1
		pfdErr  error
	)
	cerr := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		groups, grpErr = peerGroups(int(fd))
		pidfd, pfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	})
	if cerr != nil {
		return p, cerr
	}
	if credErr != nil {
		return p, os.NewSyscallError("getsockopt SO_PEERCRED", credErr)
	}
	p.id = Identity{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	if grpErr == nil {
		p.id.Groups = groups
	}
	if cred.Pid <= 0 {
		return p, nil // peer in another pid namespace: no pid to pin
	}
	source := "SO_PEERPIDFD"
	if pfdErr != nil || pidfd < 0 {
		source = "pidfd_open"
		pidfd, err = unix.PidfdOpen(int(cred.Pid), 0)
		if err != nil {
			// The peer already exited (ESRCH), or no pidfd support (a
			// pre-5.3 kernel): keep the socket's credentials only.
			return p, nil
		}
	}
	unix.CloseOnExec(pidfd)
	p.pidfd = pidfd
	p.id.PIDSource = source

	dir := filepath.Join(procRoot, strconv.Itoa(int(cred.Pid)))
	status, serr := os.ReadFile(filepath.Join(dir, "status"))
	comm, cerr2 := os.ReadFile(filepath.Join(dir, "comm"))
	// After the reads: is the pinned process still alive? If it is, the
	// pid could not have been reused, so what we read was about it.
	alive := unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil
	if !alive || serr != nil {
		return p, nil
	}
	st := parseStatus(status)
	if source == "pidfd_open" && !slices.Contains(st.uids, cred.Uid) {
		// Not provably the peer: use nothing from /proc.
		return p, nil
	}
	if cerr2 == nil {
		p.id.Comm = strings.TrimSuffix(string(comm), "\n")
		if len(p.id.Comm) > protocol.MaxNameLen {
			p.id.Comm = p.id.Comm[:protocol.MaxNameLen]
		}
	}
	if grpErr != nil && st.groupsOK {
		p.id.Groups = st.groups
	}
	return p, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+): the peer's supplementary
// groups at connect time, from the socket. x/sys/unix has no wrapper that
// returns raw option bytes, so this is the one raw getsockopt here.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for range 3 {
		buf := make([]uint32, n)
		size := uint32(n * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			groups := buf[:size/4]
			if len(groups) > protocol.MaxGroups {
				groups = groups[:protocol.MaxGroups]
			}
			return groups, nil
		case unix.ERANGE:
			n = int(size/4) + 1
			continue
		default:
			return nil, os.NewSyscallError("getsockopt SO_PEERGROUPS", errno)
		}
	}
	return nil, errors.New("getsockopt SO_PEERGROUPS: group list keeps growing")
}

type procStatus struct {
	uids     []uint32 // real, effective, saved, fs
	groups   []uint32
	groupsOK bool
}

// parseStatus reads the Uid and Groups lines of /proc/PID/status.
func parseStatus(b []byte) procStatus {
	var st procStatus
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "Uid":
			st.uids = parseIDs(val)
		case "Groups":
			st.groups = parseIDs(val)
			if len(st.groups) > protocol.MaxGroups {
				st.groups = st.groups[:protocol.MaxGroups]
			}
			st.groupsOK = true
		}
	}
	return st
}

func parseIDs(s string) []uint32 {
	var out []uint32
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			continue
		}
		out = append(out, uint32(v))
	}
	return out
}

// closePIDFD closes a pidfd from peerIdentity (no-op for -1).
func closePIDFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
