package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// AdminSuffix is appended to the socket path to name the admin socket
// ("/run/heapd/socket.admin").
const AdminSuffix = ".admin"

// AdminRequest is one request on the admin socket: one JSON object on
// one line.
type AdminRequest struct {
	// Request is "ledger": list every live buffer.
	Request string `json:"request"`
}

// AdminReply answers an AdminRequest: one JSON object on one line.
type AdminReply struct {
	// Error is set, and nothing else, when the request failed.
	Error string `json:"error,omitempty"`
	// Buffers answers "ledger".
	Buffers []LedgerEntry `json:"buffers,omitempty"`
	// Accounted is false when the daemon's ledger does not follow
	// buffers (then Buffers is empty).
	Accounted bool `json:"accounted"`
}

// ListenAdmin creates the admin socket at path (a stream socket, mode
// 0600): only root and heapd's own user may use it, and the server checks
// that again per connection. Call it while holding the main socket's lock
// (after Listen, with Listener.Path+AdminSuffix): a socket file already at
// path is then a stale one and is replaced.
func ListenAdmin(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// Bind with a umask that never exposes the socket, then set the mode.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// ServeAdmin serves the admin socket until ctx ends: each connection
// sends AdminRequests and reads AdminReplies, one JSON line each. Peers
// other than root and the daemon's own uid get an error and are
// disconnected. ServeAdmin takes ownership of ln and removes its socket
// file when it returns.
func (s *Server) ServeAdmin(ctx context.Context, ln *net.UnixListener) error {
	ln.SetUnlinkOnClose(true)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isTransientAccept(err) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("admin accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveAdminConn(ctx, c)
		}()
	}
}

func (s *Server) serveAdminConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	enc := json.NewEncoder(c)
	uid, err := peerUID(c)
	if err != nil {
		enc.Encode(AdminReply{Error: err.Error()})
		return
	}
	if uid != 0 && uid != uint32(os.Getuid()) {
		s.log.Info("admin socket: refused", "uid", uid)
		enc.Encode(AdminReply{Error: fmt.Sprintf("uid %d may not use heapd's admin socket: it is for root and heapd's own user", uid)})
		return
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if !sc.Scan() {
			return
		}
		var req AdminRequest
		var rep AdminReply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep.Error = "malformed request: " + err.Error()
		} else {
			rep = s.admin(ctx, req)
		}
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err := enc.Encode(rep); err != nil {
			return
		}
	}
}

func (s *Server) admin(ctx context.Context, req AdminRequest) AdminReply {
	switch req.Request {
	case "ledger":
		l, ok := s.cfg.Ledger.(Lister)
		if !ok {
			return AdminReply{Accounted: false, Buffers: []LedgerEntry{}}
		}
		es, err := l.List(ctx)
		if err != nil {
			return AdminReply{Error: err.Error()}
		}
		return AdminReply{Accounted: true, Buffers: es}
	}
	return AdminReply{Error: fmt.Sprintf("unknown request %q (this heapd serves: ledger)", req.Request)}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	return cred.Uid, nil
}
