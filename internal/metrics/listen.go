package metrics

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// UnixPrefix marks a Unix socket path in a listen address
// ("unix:/run/heapd/metrics").
const UnixPrefix = "unix:"

// SocketMode is the mode of a metrics Unix socket: heapd's user and group
// may scrape. The numbers are not secret, but per-uid usage is nobody
// else's business.
const SocketMode = 0o660

// Path is where the metrics are served.
const Path = "/metrics"

// Listen opens the metrics listener at addr: "host:port" (TCP;
// "127.0.0.1:9477", "[::1]:9477", ":9477" for every address) or
// "unix:/path" (a SOCK_STREAM Unix socket, mode SocketMode, its directory
// created 0755 when missing). A socket file left by a dead process is
// replaced; a live one, or a path that is not a socket, is an error. The
// caller owns the listener; closing it removes the socket file.
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, errors.New("metrics: empty listen address")
	}
	path, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("metrics: listen address %q: want host:port or unix:/path: %w", addr, err)
		}
		return net.Listen("tcp", addr)
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("metrics: listen address %q: the socket path must be absolute", addr)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// removeStale removes a dead socket file at path.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("metrics: %s exists and is not a socket: move it away or choose another address", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("metrics: %s: a live server answers there: refusing to replace it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("metrics: %s: cannot tell whether the socket is in use (%v): refusing to replace it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Serve serves m on ln (Path, and a short pointer to it on /) until ctx
// ends, then shuts the server down, waiting up to five seconds for scrapes
// in progress. It takes ownership of ln and returns nil after a shutdown
// caused by ctx, or the error that stopped the server. A nil *Metrics
// serves 404s.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(Path, m.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "heapd metrics: %s\n", Path)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
