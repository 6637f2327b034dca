package scan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pfKthread is PF_KTHREAD in the flags field of /proc/<pid>/stat.
const pfKthread = 0x00200000

// expNameLine marks the fdinfo of a DMA-BUF: the generic lines come first,
// so the field always follows a newline.
var expNameLine = []byte("\nexp_name:")

// procReader holds the buffers one walk reuses for every file it reads.
// The walk reads procfs with openat relative to directory fds: one path
// component per open instead of four.
type procReader struct {
	procFD  int
	dirents []byte
	small   []byte // fdinfo, comm, stat
	large   []byte // maps
}

func newProcReader(procDir string) (*procReader, error) {
	fd, err := unix.Open(procDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: procDir, Err: err}
	}
	return &procReader{
		procFD:  fd,
		dirents: make([]byte, 32<<10),
		small:   make([]byte, 4096),
		large:   make([]byte, 64<<10),
	}, nil
}

func (r *procReader) close() { unix.Close(r.procFD) }

// forEachEntry calls f with the name of every entry of the directory fd
// (but "." and ".."). name is valid only during the call.
func (r *procReader) forEachEntry(dirFD int, f func(name []byte)) error {
	for {
		n, err := unix.Getdents(dirFD, r.dirents)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		for b := r.dirents[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return fmt.Errorf("getdents: bad record length %d", reclen)
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			b = b[reclen:]
			if string(name) == "." || string(name) == ".." {
				continue
			}
			f(name)
		}
	}
}

// readSmall reads a single-record procfs file (fdinfo, comm, stat) below
// dirFD in one read when it fits, which it does for every such file:
// seq_file returns a single record whole, so a short read is the end.
func (r *procReader) readSmall(dirFD int, name string) ([]byte, error) {
	fd, err := openat(dirFD, name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		m, err := unix.Read(fd, r.small[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		n += m
		if m == 0 || n < len(r.small) {
			return r.small[:n], nil
		}
		r.small = append(r.small, make([]byte, len(r.small))...)
	}
}

// readAll reads a multi-record procfs file (maps), which seq_file hands
// out a page or so per read, until EOF.
func (r *procReader) readAll(dirFD int, name string) ([]byte, error) {
	fd, err := openat(dirFD, name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(r.large) {
			r.large = append(r.large, make([]byte, len(r.large))...)
		}
		m, err := unix.Read(fd, r.large[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return r.large[:n], nil
		}
		n += m
	}
}

func openat(dirFD int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirFD, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// pids lists the numeric entries of the proc root.
func (r *procReader) pids() ([]int, error) {
	var out []int
	err := r.forEachEntry(r.procFD, func(name []byte) {
		if pid, ok := atoi(name); ok {
			out = append(out, pid)
		}
	})
	return out, err
}

// atoi parses a non-negative decimal without allocating.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func (w *walk) run(ctx context.Context) error {
	r, err := newProcReader(w.cfg.procDir())
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	defer r.close()
	pids, err := r.pids()
	if err != nil {
		return fmt.Errorf("scan: list %s: %w", w.cfg.procDir(), err)
	}
	for i, pid := range pids {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		w.process(r, pid)
	}
	return nil
}

// process reads one process's fdinfo and maps.
func (w *walk) process(r *procReader, pid int) {
	w.stats.Processes++
	w.curFDs, w.curMaps = w.curFDs[:0], w.curMaps[:0]
	ps := strconv.Itoa(pid)
	dirFD, err := unix.Openat(r.procFD, ps+"/fdinfo", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.unreadable(r, pid, ps, "fdinfo", err)
		return
	}
	err = r.forEachEntry(dirFD, func(name []byte) {
		data, err := r.readSmall(dirFD, string(name))
		if err != nil {
			// The fd was closed meanwhile (ENOENT), or the process is
			// exiting: nothing to count.
			return
		}
		if !bytes.Contains(data, expNameLine) {
			return
		}
		info, err := parseFDInfo(data, w.intern)
		if err != nil || info.Exporter == "" {
			w.log.Debug("fdinfo skipped", "pid", pid, "fd", string(name), "err", err)
			return
		}
		if info.Inode == 0 { // kernels before 5.14 print no ino: line
			var st unix.Stat_t
			if err := unix.Fstatat(r.procFD, ps+"/fd/"+string(name), &st, 0); err != nil {
				return
			}
			info.Inode = st.Ino
		}
		w.curFDs = append(w.curFDs, info)
	})
	unix.Close(dirFD)
	if err != nil {
		w.unreadable(r, pid, ps, "fdinfo", err)
		return
	}
	data, err := r.readAll(r.procFD, ps+"/maps")
	if err != nil {
		w.unreadable(r, pid, ps, "maps", err)
		return
	}
	if err := forEachMapping(data, func(m Mapping) { w.curMaps = append(w.curMaps, m) }); err != nil {
		w.problem("%s/%d/maps: %v", w.cfg.procDir(), pid, err)
	}
	w.commit(pid, func() (string, uint32) {
		comm := ""
		if b, err := r.readSmall(r.procFD, ps+"/comm"); err == nil {
			comm = string(bytes.TrimSuffix(b, []byte{'\n'}))
		}
		var st unix.Stat_t
		if err := unix.Fstatat(r.procFD, ps, &st, 0); err != nil {
			return comm, 0
		}
		return comm, st.Uid
	})
}

// unreadable counts a process whose files could not be read: gone
// (vanished), not ours (unreadable, unless a kernel thread, which has no
// fds to see), or something else (unreadable, and logged).
func (w *walk) unreadable(r *procReader, pid int, ps, what string, err error) {
	w.curFDs, w.curMaps = w.curFDs[:0], w.curMaps[:0]
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		w.stats.Vanished++
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		if w.kernelThread(r, ps) {
			return
		}
		w.stats.Unreadable++
	default:
		w.log.Debug("process unreadable", "pid", pid, "file", what, "err", err)
		w.stats.Unreadable++
	}
}

// kernelThread reports whether /proc/<pid>/stat has PF_KTHREAD.
func (w *walk) kernelThread(r *procReader, ps string) bool {
	b, err := r.readSmall(r.procFD, ps+"/stat")
	if err != nil {
		return false
	}
	flags, ok := statFlags(b)
	return ok && flags&pfKthread != 0
}

// statFlags returns field 9 (flags) of /proc/<pid>/stat. The command name
// in field 2 may hold blanks and parentheses: fields are counted after
// the last ')'.
func statFlags(b []byte) (uint64, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	// state ppid pgrp session tty_nr tpgid flags
	if len(f) < 7 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f[6]), 10, 64)
	return v, err == nil
}
