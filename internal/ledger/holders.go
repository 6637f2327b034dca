package ledger

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/heapd/heapd/internal/daemon"
)

// scanHolders walks procRoot and returns, per inode of a DMA-BUF or
// memfd, the processes that hold an fd or a mapping of it. The calling
// process itself is left out (it holds the ledger's references).
func scanHolders(ctx context.Context, procRoot string) (map[uint64][]daemon.Holder, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	out := map[uint64][]daemon.Holder{}
	for _, ent := range ents {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join(procRoot, ent.Name())
		fds := map[uint64]int{}
		maps := map[uint64]int{}
		if fdEnts, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
			for _, fe := range fdEnts {
				p := filepath.Join(dir, "fd", fe.Name())
				link, err := os.Readlink(p)
				if err != nil || !bufferLink(link) {
					continue
				}
				var st syscall.Stat_t
				if syscall.Stat(p, &st) == nil {
					fds[st.Ino]++
				}
			}
		}
		if f, err := os.Open(filepath.Join(dir, "maps")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				// addr perms offset dev inode path
				fields := strings.Fields(sc.Text())
				if len(fields) < 6 || !bufferLink(fields[5]) {
					continue
				}
				if ino, err := strconv.ParseUint(fields[4], 10, 64); err == nil && ino != 0 {
					maps[ino]++
				}
			}
			f.Close()
		}
		if len(fds) == 0 && len(maps) == 0 {
			continue
		}
		h := daemon.Holder{PID: int32(pid)}
		if st, err := os.Stat(dir); err == nil {
			if s, ok := st.Sys().(*syscall.Stat_t); ok {
				h.UID = s.Uid
			}
		}
		if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			h.Comm = strings.TrimSpace(string(comm))
		}
		seen := map[uint64]bool{}
		for ino := range fds {
			seen[ino] = true
		}
		for ino := range maps {
			seen[ino] = true
		}
		for ino := range seen {
			hh := h
			hh.FDs, hh.Maps = fds[ino], maps[ino]
			out[ino] = append(out[ino], hh)
		}
	}
	return out, nil
}

// bufferLink reports whether an fd link or maps path names a DMA-BUF or a
// memfd.
func bufferLink(s string) bool {
	return strings.HasPrefix(s, "/dmabuf:") || strings.HasPrefix(s, "anon_inode:dmabuf") || strings.HasPrefix(s, "/memfd:")
}
