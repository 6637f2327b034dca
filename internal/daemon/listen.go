package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where heapd listens unless told otherwise.
const DefaultSocket = "/run/heapd/socket"

// SocketMode is the socket file's mode: everyone may connect, because
// identity is checked per connection from the socket's peer credentials.
const SocketMode = 0o666

// ErrAddrInUse means another server is live on the socket path.
var ErrAddrInUse = errors.New("daemon: socket in use")

// Listener is a listening heapd socket: the listener itself and, when
// heapd created the socket file, the lock that guards it.
type Listener struct {
	*net.UnixListener
	// Path is the socket's path ("" when systemd passed the socket).
	Path string
	// Activated reports that systemd passed the socket.
	Activated bool
	lock      *os.File
}

// Close closes the listener (removing the socket file heapd created) and
// releases the lock. Idempotent.
func (l *Listener) Close() error {
	if l == nil {
		return nil
	}
	err := l.UnixListener.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if l.lock != nil {
		// The lock file stays: removing it would race with a new heapd
		// that has just opened it.
		l.lock.Close()
		l.lock = nil
	}
	return err
}

// Listen creates the SOCK_SEQPACKET socket at path with mode SocketMode,
// creating its directory (0755) if needed.
//
// A lock file beside it (path + ".lock", held with flock for the
// listener's life) keeps two heapds off one path. A socket file left by a
// crashed heapd is detected and replaced: nobody holds the lock, and a
// connection attempt is refused. A live socket is never replaced: Listen
// fails with ErrAddrInUse and says who holds it. A path that exists and is
// not a socket is left alone, with an error.
func Listen(path string, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("daemon: empty socket path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: another heapd is running (it holds %s.lock): stop it first or choose another --socket: %w", path, path, ErrAddrInUse)
		}
		return nil, &os.PathError{Op: "flock", Path: path + ".lock", Err: err}
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := removeStale(path, log); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, err
	}
	ok = true
	return &Listener{UnixListener: ln, Path: path, lock: lock}, nil
}

// removeStale removes a dead socket file at path. Called with the lock
// held, so no other heapd is binding it concurrently.
func removeStale(path string, log *slog.Logger) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s): heapd will not remove it; move it away or choose another --socket", path, st.Mode().Type())
	}
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: a live server answers there (not holding heapd's lock: a heapd of another version, or another program): refusing to replace it: %w", path, ErrAddrInUse)
	}
	if !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: cannot tell whether the socket is in use (%v): refusing to replace it", path, err)
	}
	log.Info("replacing stale socket left by a previous run", "path", path)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
