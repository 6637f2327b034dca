package scan

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/drm"
)

// holdSpec is what a holding child allocates and keeps.
type holdSpec struct {
	Buffers []holdBuffer
	// Inherited is the number of DMA-BUF fds the parent passed (fd 3 on),
	// and MapInherited maps each once.
	Inherited    int
	MapInherited bool
}

// holdBuffer is one buffer a child allocates from Heap: it holds FDs fds
// for it (1 + duplicates) and Maps mappings, and imports it into vgem
// when ImportVgem is set (bufinfo then lists the device).
type holdBuffer struct {
	Heap       string
	Size       int64
	Name       string
	FDs, Maps  int
	ImportVgem bool
}

// held is what a holding child reports for each buffer.
type held struct {
	Inode uint64
	Size  int64
	Name  string
}

// holdMain allocates, reports and holds until stdin closes.
func holdMain(spec holdSpec) error {
	var closers []io.Closer
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}()
	var report []held
	hold := func(b *dmabuf.Buffer, fds, maps int) error {
		closers = append(closers, b)
		for range fds - 1 {
			c, err := b.Clone()
			if err != nil {
				return err
			}
			closers = append(closers, c)
		}
		for range maps {
			m, err := b.Map(dmabuf.ProtReadWrite)
			if err != nil {
				return err
			}
			closers = append(closers, m)
		}
		info, err := b.Stat()
		if err != nil {
			return err
		}
		report = append(report, held{Inode: info.Inode, Size: info.Size, Name: info.Name})
		return nil
	}
	for _, hb := range spec.Buffers {
		h, err := dmaheap.Open(hb.Heap)
		if err != nil {
			return err
		}
		b, err := h.Alloc(hb.Size)
		h.Close()
		if err != nil {
			return err
		}
		if hb.Name != "" {
			if err := b.SetName(hb.Name); err != nil {
				b.Close()
				return err
			}
		}
		if err := hold(b, hb.FDs, hb.Maps); err != nil {
			return err
		}
		if hb.ImportVgem {
			d, err := drm.Open(cardOf("vgem"))
			if err != nil {
				return err
			}
			closers = append(closers, d)
			hd, err := d.Import(b)
			if err != nil {
				return err
			}
			closers = append(closers, hd)
		}
	}
	for i := range spec.Inherited {
		b, err := dmabuf.New(3 + i)
		if err != nil {
			return fmt.Errorf("inherited fd %d: %w", 3+i, err)
		}
		maps := 0
		if spec.MapInherited {
			maps = 1
		}
		if err := hold(b, 1, maps); err != nil {
			return err
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

// holder is a running holding child.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	held  []held
}

// startHolder starts a child that holds spec (plus extra, passed as fds
// 3 on), waits for its report, and stops it at cleanup.
func startHolder(t *testing.T, spec holdSpec, extra ...*os.File) *holder {
	t.Helper()
	spec.Inherited = len(extra)
	cmd := childCmd(t, childJob{Hold: &spec}, nil)
	cmd.ExtraFiles = extra
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { h.stop(t) })
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("holding child: no report: %v", err)
	}
	if err := json.Unmarshal(line, &h.held); err != nil {
		t.Fatalf("holding child: report %q: %v", line, err)
	}
	return h
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

// stop closes the child's stdin and waits for it to exit. Idempotent.
func (h *holder) stop(t *testing.T) {
	t.Helper()
	if h.stdin == nil {
		return
	}
	h.stdin.Close()
	h.stdin = nil
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("holding child %d: %v", h.pid(), err)
	}
}
