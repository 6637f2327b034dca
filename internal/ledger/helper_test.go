package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/protocol"
)

// helperEnv makes the test binary a client process driven over stdin
// ("helper") or a process that only holds the fds it inherited ("hold").
const helperEnv = "HEAPD_LEDGER_TEST_HELPER"

// reply is one line a helper writes per command.
type reply struct {
	OK      bool            `json:"ok"`
	Code    uint32          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
	IDs     []uint64        `json:"ids,omitempty"`
	PID     int             `json:"pid,omitempty"`
	Won     int             `json:"won,omitempty"`
	Codes   map[uint32]int  `json:"codes,omitempty"`
	Usage   *protocol.Usage `json:"usage,omitempty"`
	Elapsed time.Duration   `json:"elapsed,omitempty"`
}

func helperMain(mode string) int {
	if mode == "hold" {
		for { // hold the inherited fds until killed
			time.Sleep(time.Hour)
		}
	}
	h := &helper{c: &client.Client{}}
	defer h.c.Close()
	enc := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "exit" {
			return 0
		}
		enc.Encode(h.do(f))
	}
	return 0
}

type helper struct {
	c    *client.Client
	bufs []*dmabuf.Buffer
	maps []*dmabuf.Mapping
	kids []*exec.Cmd
}

func errReply(err error) reply {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return reply{Code: uint32(pe.Code), Error: pe.Message}
	}
	return reply{Error: err.Error()}
}

func (h *helper) do(f []string) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	num := func(i int) int64 {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return n
	}
	switch f[0] {
	case "alloc": // alloc HEAP SIZE COUNT
		a, err := h.c.Allocate(ctx, client.Request{Heap: f[1], Size: num(2), Count: int(num(3))})
		if err != nil {
			return errReply(err)
		}
		h.bufs = append(h.bufs, a.Buffers...)
		return reply{OK: true, IDs: a.IDs}
	case "race": // race CONNS HEAP SIZE TRIES: one connection per goroutine
		n, tries := int(num(1)), int(num(4))
		var (
			mu    sync.Mutex
			wg    sync.WaitGroup
			won   int
			codes = map[uint32]int{}
			start = make(chan struct{})
		)
		for range n {
			c := &client.Client{}
			if _, err := c.Info(ctx); err != nil {
				return errReply(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				<-start
				for range tries {
					b, err := c.Alloc(ctx, f[2], num(3))
					mu.Lock()
					if err != nil {
						codes[errReply(err).Code]++
					} else {
						won++
						h.bufs = append(h.bufs, b)
					}
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		return reply{OK: true, Won: won, Codes: codes}
	case "map":
		for _, b := range h.bufs {
			m, err := b.Map(dmabuf.ProtReadWrite)
			if err != nil {
				return errReply(err)
			}
			h.maps = append(h.maps, m)
		}
		return reply{OK: true}
	case "close": // close every fd (mappings stay)
		for _, b := range h.bufs {
			b.Close()
		}
		h.bufs = nil
		return reply{OK: true}
	case "unmap":
		for _, m := range h.maps {
			m.Close()
		}
		h.maps = nil
		return reply{OK: true}
	case "reconnect":
		h.c.Close()
		h.c = &client.Client{}
		return reply{OK: true}
	case "spawn": // a child of this uid inherits every buffer fd
		self, err := os.Executable()
		if err != nil {
			return errReply(err)
		}
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), helperEnv+"=hold")
		for _, b := range h.bufs {
			f, err := b.File()
			if err != nil {
				return errReply(err)
			}
			defer f.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
		if err := cmd.Start(); err != nil {
			return errReply(err)
		}
		h.kids = append(h.kids, cmd)
		return reply{OK: true, PID: cmd.Process.Pid}
	case "usage":
		u, err := h.c.Usage(ctx)
		if err != nil {
			return errReply(err)
		}
		return reply{OK: true, Usage: u}
	case "waitfree": // waitfree TIMEOUT_MS: poll usage until nothing is charged
		start := time.Now()
		for {
			u, err := h.c.Usage(ctx)
			if err != nil {
				return errReply(err)
			}
			if u.Bytes == 0 && u.Buffers == 0 {
				return reply{OK: true, Elapsed: time.Since(start), Usage: u}
			}
			if time.Since(start) > time.Duration(num(1))*time.Millisecond {
				return reply{Error: fmt.Sprintf("still charged after %s: %d bytes in %d buffers", time.Since(start), u.Bytes, u.Buffers), Usage: u}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return reply{Error: "unknown command " + f[0]}
}

// proc is a helper process running as some uid, driven by the test.
type proc struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
	err strings.Builder
}

// startHelper runs the test binary as a helper, as uid:gid with groups.
// The binary is copied where every uid can run it.
func startHelper(t *testing.T, d *daemontest.Daemon, uid, gid uint32, groups ...uint32) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := helperBinary(t, self)
	p := &proc{t: t, cmd: exec.Command(bin, "-test.run=^$")}
	p.cmd.Env = append(os.Environ(), helperEnv+"=helper", client.EnvSocket+"="+d.Socket)
	if groups == nil {
		groups = []uint32{}
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	p.in, err = p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = json.NewDecoder(out)
	p.cmd.Stderr = &p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

// helperBinary copies the test binary where every uid can run it.
func helperBinary(t *testing.T, self string) string {
	t.Helper()
	path := filepath.Join(daemontest.TempDir(t), "ledger.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// do sends one command and returns the reply.
func (p *proc) do(cmd string, args ...any) reply {
	p.t.Helper()
	line := cmd
	for _, a := range args {
		line += " " + fmt.Sprint(a)
	}
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		p.t.Fatalf("helper %s: %v\n%s", line, err, p.err.String())
	}
	var r reply
	if err := p.out.Decode(&r); err != nil {
		p.t.Fatalf("helper %s: %v\n%s", line, err, p.err.String())
	}
	return r
}

// must is do that fails the test unless the command succeeded.
func (p *proc) must(cmd string, args ...any) reply {
	p.t.Helper()
	r := p.do(cmd, args...)
	if !r.OK {
		p.t.Fatalf("helper %s %v: code %d: %s", cmd, args, r.Code, r.Error)
	}
	return r
}

func (p *proc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	io.WriteString(p.in, "exit\n")
	p.in.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}
