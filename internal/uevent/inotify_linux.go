package uevent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watchDir is a directory under /dev the fallback follows.
type watchDir struct {
	rel       string // "" is the /dev directory itself
	subsystem string
	devType   string // DEVTYPE the kernel would send, if any
	match     func(name string) bool
}

// watchedDirs returns what the fallback follows: the nodes the kernel's
// devtmpfs creates for the uevents Relevant keeps.
func watchedDirs() []watchDir {
	return []watchDir{
		{rel: "dri", subsystem: "drm", devType: "drm_minor", match: isDRMNodeName},
		{rel: "dma_heap", subsystem: "dma_heap", match: func(string) bool { return true }},
		{rel: "", subsystem: "misc", match: func(name string) bool { return name == "udmabuf" }},
	}
}

// node is what the fallback remembers of a node so that its remove event
// says what the add said.
type node struct {
	major, minor uint32
	hasDevnum    bool
	devPath      string
}

const (
	dirMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW
	// inotifyBufSize holds many records; one is 16 bytes plus a name of
	// at most NAME_MAX+1.
	inotifyBufSize = 64 << 10
)

// inotifySource watches DevDir and its dri and dma_heap directories. Only
// next (the Listener's goroutine) touches wds and nodes once open returns.
type inotifySource struct {
	f      *os.File
	rc     syscall.RawConn
	devDir string
	sysDir string
	why    string
	dirs   []watchDir
	rootWD int32
	wds    map[int32]int   // watch descriptor → index in dirs
	nodes  map[string]node // DEVNAME → node
	buf    []byte
}

// openInotify watches devDir; why is the reason the fallback is in use,
// for String. The returned source owns the inotify fd. Nodes that exist
// now are remembered, not reported.
func openInotify(devDir, sysDir, why string) (*inotifySource, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("uevent: %w", os.NewSyscallError("inotify_init1", err))
	}
	f := os.NewFile(uintptr(fd), "uevent-inotify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("uevent: %w", err)
	}
	s := &inotifySource{
		f: f, rc: rc, devDir: devDir, sysDir: sysDir, why: why,
		dirs:  watchedDirs(),
		wds:   map[int32]int{},
		nodes: map[string]node{},
		buf:   make([]byte, inotifyBufSize),
	}
	for i, d := range s.dirs {
		if d.rel != "" {
			continue
		}
		wd, err := s.addWatch(devDir)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("uevent: %w", err)
		}
		s.rootWD = wd
		s.wds[wd] = i
	}
	// Subdirectories may not exist yet (no DRM driver loaded): their
	// creation in devDir adds the watch then.
	for i, d := range s.dirs {
		if d.rel != "" {
			s.watchSub(i, nil)
		}
	}
	return s, nil
}

// addWatch adds an inotify watch on dir.
func (s *inotifySource) addWatch(dir string) (int32, error) {
	var wd int
	var werr error
	if err := s.rc.Control(func(fd uintptr) {
		wd, werr = unix.InotifyAddWatch(int(fd), dir, dirMask)
	}); err != nil {
		return -1, err
	}
	if werr != nil {
		return -1, &os.PathError{Op: "inotify_add_watch", Path: dir, Err: werr}
	}
	return int32(wd), nil
}

// watchSub starts watching dirs[i] if it exists and records the nodes in
// it; with dst non-nil, nodes not seen before are reported as added (the
// directory appeared while we ran and its first nodes may predate the
// watch).
func (s *inotifySource) watchSub(i int, dst *[]Event) {
	d := s.dirs[i]
	wd, err := s.addWatch(filepath.Join(s.devDir, d.rel))
	if err != nil {
		return // absent (ENOENT) or not a directory: wait for its creation
	}
	s.wds[wd] = i
	s.scan(i, dst)
}

// scan records the matching nodes of dirs[i]; with dst non-nil, nodes not
// seen before are reported as added.
func (s *inotifySource) scan(i int, dst *[]Event) {
	d := s.dirs[i]
	ents, err := os.ReadDir(filepath.Join(s.devDir, d.rel))
	if err != nil {
		return
	}
	for _, e := range ents {
		if !d.match(e.Name()) {
			continue
		}
		devName := path(d.rel, e.Name())
		if _, ok := s.nodes[devName]; ok {
			continue
		}
		if ev, ok := s.added(i, e.Name()); ok && dst != nil {
			*dst = append(*dst, ev)
		}
	}
}

// path joins a watched directory and a name as a DEVNAME.
func path(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// added records the node name in dirs[i] and returns its add event; ok is
// false when it is not a node (gone already, a directory or a link).
func (s *inotifySource) added(i int, name string) (ev Event, ok bool) {
	d := s.dirs[i]
	devName := path(d.rel, name)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.devDir, d.rel, name), &st); err != nil {
		return Event{}, false
	}
	var n node
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		n.major, n.minor, n.hasDevnum = unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), true
		n.devPath = s.sysDevPath(n.major, n.minor)
	case unix.S_IFREG, unix.S_IFBLK:
		// A regular file stands in for a node in tests; a block device
		// is not expected here but is still a node.
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			n.major, n.minor, n.hasDevnum = unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), true
		}
	default:
		return Event{}, false
	}
	s.nodes[devName] = n
	return s.event(ActionAdd, d, devName, n), true
}

// sysDevPath finds DEVPATH through /sys/dev/char/MAJOR:MINOR, a link to
// ../../devices/…; "" when sysfs does not know the number.
func (s *inotifySource) sysDevPath(major, minor uint32) string {
	link, err := os.Readlink(filepath.Join(s.sysDir, "dev", "char", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return ""
	}
	for strings.HasPrefix(link, "../") {
		link = link[3:]
	}
	if !strings.HasPrefix(link, "devices/") {
		return ""
	}
	return "/" + link
}

// event synthesizes what the kernel would have sent, as far as /dev tells.
func (s *inotifySource) event(a Action, d watchDir, devName string, n node) Event {
	ev := Event{
		Action: a, DevPath: n.devPath, Subsystem: d.subsystem, DevName: devName,
		Env: map[string]string{"ACTION": string(a), "SUBSYSTEM": d.subsystem, "DEVNAME": devName},
	}
	if n.devPath != "" {
		ev.Env["DEVPATH"] = n.devPath
	}
	if d.devType != "" {
		ev.Env["DEVTYPE"] = d.devType
	}
	if n.hasDevnum {
		ev.Major, ev.Minor = n.major, n.minor
		ev.Env["MAJOR"] = strconv.FormatUint(uint64(n.major), 10)
		ev.Env["MINOR"] = strconv.FormatUint(uint64(n.minor), 10)
	}
	return ev
}

func (s *inotifySource) next(dst []Event, c *counters) ([]Event, error) {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), s.buf)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return dst, err
	}
	if rerr != nil {
		if errors.Is(rerr, unix.EINTR) {
			return dst, nil
		}
		return dst, os.NewSyscallError("read inotify", rerr)
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&s.buf[off]))
		end := off + unix.SizeofInotifyEvent + int(raw.Len)
		if end > n {
			break // the kernel never splits a record
		}
		name := strings.TrimRight(string(s.buf[off+unix.SizeofInotifyEvent:end]), "\x00")
		off = end
		c.received.Add(1)
		var err error
		if dst, err = s.handle(dst, raw.Wd, raw.Mask, name, c); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// handle turns one inotify record into events.
func (s *inotifySource) handle(dst []Event, wd int32, mask uint32, name string, c *counters) ([]Event, error) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		// Records were lost: resynchronise silently, let the consumer
		// rescan.
		c.overflows.Add(1)
		s.resync()
		return append(dst, Event{Action: ActionOverflow}), nil
	}
	i, ok := s.wds[wd]
	if !ok {
		return dst, nil // a watch removed a moment ago
	}
	d := s.dirs[i]
	if mask&unix.IN_IGNORED != 0 {
		delete(s.wds, wd)
		if wd == s.rootWD {
			return dst, fmt.Errorf("uevent: %s was removed or unmounted", s.devDir)
		}
		// The directory went away (devtmpfs removes an emptied one):
		// whatever it still held is gone. A directory of the same name
		// may already be back, watched under another descriptor, so
		// only nodes that are really missing count.
		for devName, n := range s.nodes {
			dir, _, ok := strings.Cut(devName, "/")
			if !ok || dir != d.rel {
				continue
			}
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(s.devDir, devName), &st) != nil {
				delete(s.nodes, devName)
				dst = append(dst, s.event(ActionRemove, d, devName, n))
			}
		}
		return dst, nil
	}
	if mask&unix.IN_ISDIR != 0 {
		if wd == s.rootWD && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			for j, sub := range s.dirs {
				if sub.rel != "" && sub.rel == name {
					// Watching the same inode again returns the same
					// descriptor; a new directory gets a new one.
					s.watchSub(j, &dst)
				}
			}
		}
		return dst, nil
	}
	if !d.match(name) {
		return dst, nil
	}
	devName := path(d.rel, name)
	switch {
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
		if _, known := s.nodes[devName]; known {
			return dst, nil // the scan of a new directory saw it first
		}
		if ev, ok := s.added(i, name); ok {
			dst = append(dst, ev)
		}
	case mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		n, known := s.nodes[devName]
		if !known {
			return dst, nil // never reported as added
		}
		delete(s.nodes, devName)
		dst = append(dst, s.event(ActionRemove, d, devName, n))
	}
	return dst, nil
}

// resync rebuilds the node table from the directories after an overflow,
// watching directories whose creation may have been lost.
func (s *inotifySource) resync() {
	clear(s.nodes)
	for i, d := range s.dirs {
		if d.rel == "" {
			s.scan(i, nil)
		} else {
			s.watchSub(i, nil)
		}
	}
}

func (s *inotifySource) close() error         { return s.f.Close() }
func (s *inotifySource) mechanism() Mechanism { return Inotify }

func (s *inotifySource) String() string {
	var dirs []string
	for _, d := range s.dirs {
		dirs = append(dirs, filepath.Join(s.devDir, d.rel))
	}
	desc := "inotify on " + strings.Join(dirs[:len(dirs)-1], ", ") + " and " + dirs[len(dirs)-1]
	if s.why != "" {
		desc += " (" + s.why + ")"
	}
	return desc
}
