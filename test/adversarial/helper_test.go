package adversarial

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/internal/daemon/daemontest"
	"github.com/heapd/heapd/protocol"
)

// The test binary doubles as the helper processes (another uid, a client
// that exits with requests in flight): TestMain runs runHelper when
// helperEnv is set.
const (
	helperEnv   = "HEAPD_ADVERSARIAL_HELPER"
	helperSock  = "HEAPD_ADVERSARIAL_SOCKET"
	helperHeap  = "HEAPD_ADVERSARIAL_HEAP"
	helperSize  = "HEAPD_ADVERSARIAL_SIZE"
	fillPattern = 0xa5
)

// runHelper is the helper process's main.
//
//	fill: allocate SIZE bytes from HEAP, fill them with 0xa5, free them;
//	      print "ok" or the error.
//	inflight: handshake, then send requests carrying fds and Allocates
//	      for 16 buffers each, and exit without reading a reply.
//	inflight-hang: the same, then wait to be killed.
func runHelper(mode string) int {
	sock := os.Getenv(helperSock)
	switch mode {
	case "fill":
		size, _ := strconv.ParseInt(os.Getenv(helperSize), 10, 64)
		if err := fill(sock, os.Getenv(helperHeap), size); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("ok")
		return 0
	case "inflight", "inflight-hang":
		r, err := dialRaw(sock)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if err := r.send(1, hello); err != nil {
			fmt.Println(err)
			return 1
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			fmt.Println(err)
			return 1
		}
		fds := make([]int, protocol.MaxFDs)
		for i := range fds {
			fds[i] = p[i%2]
		}
		_ = r.sendRaw(listHeapsWithFDs(len(fds)), fds...)
		for i := range 4 {
			_ = r.send(uint32(2+i), &protocol.Allocate{Target: protocol.TargetHeap, Shape: protocol.ShapeSize, Count: protocol.MaxBatch, Size: 64 << 10, Heap: "system"})
		}
		fmt.Println("sent")
		if mode == "inflight-hang" {
			time.Sleep(time.Minute)
		}
		return 0
	}
	fmt.Println("unknown helper mode", mode)
	return 2
}

// fill allocates a buffer, writes the pattern over all of it and frees it.
func fill(sock, heapName string, size int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := &client.Client{Socket: sock}
	defer c.Close()
	a, err := c.Allocate(ctx, client.Request{Heap: heapName, Size: size})
	if err != nil {
		return err
	}
	defer a.Close()
	b := a.Buffers[0]
	m, err := b.Map(dmabuf.ProtReadWrite)
	if err != nil {
		return err
	}
	defer m.Close()
	err = b.CPUAccess(dmabuf.Write, func() error {
		p := m.Bytes()
		for i := range p {
			p[i] = fillPattern
		}
		return nil
	})
	if err != nil {
		return err
	}
	return nil
}

// listHeapsWithFDs is a ListHeaps packet whose header announces n fds
// (ListHeaps carries none, so heapd must refuse it and close the fds).
func listHeapsWithFDs(n int) []byte {
	b, _ := protocol.Encode(7, &protocol.ListHeaps{})
	b[2], b[3] = byte(n), byte(n>>8)
	return b
}

// helperBinary copies the test binary where every uid can run it.
func helperBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(daemontest.TempDir(t), "adversarial.test")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// helper starts the helper binary in mode as uid (0: as root).
func helper(bin, mode, sock string, uid uint32, env ...string) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperSock+"="+sock)
	cmd.Env = append(cmd.Env, env...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	}
	return cmd
}

func pipe(p []int) error { return unix.Pipe2(p, unix.O_CLOEXEC) }

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
