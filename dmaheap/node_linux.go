package dmaheap

import (
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

type nodeStat struct {
	uid, gid     uint32
	major, minor uint32
}

func statNode(fi fs.FileInfo) nodeStat {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nodeStat{}
	}
	return nodeStat{
		uid:   st.Uid,
		gid:   st.Gid,
		major: unix.Major(st.Rdev),
		minor: unix.Minor(st.Rdev),
	}
}

// canRead is access(2) with R_OK: what open(O_RDONLY) would allow the real
// user and group IDs.
func canRead(path string) bool {
	for {
		err := unix.Access(path, unix.R_OK)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
