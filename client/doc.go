// Package client is heapd's Go client: it asks the heapd daemon for
// DMA-BUF memory over its Unix socket and returns *dmabuf.Buffer values.
//
//	var c client.Client // the zero value works
//	defer c.Close()
//	buf, err := c.Alloc(ctx, "system", 8<<20)
//
// The zero Client connects on first use to $HEAPD_SOCKET, or to
// /run/heapd/socket, performs the version handshake, and reconnects after
// the daemon restarts. Every call takes a context: cancelling it abandons
// the call (a reply that arrives later is discarded and its fds closed).
//
// Errors the daemon sends are *protocol.Error values with stable codes:
// errors.Is(err, protocol.CodeDenied), protocol.CodeQuota, ... ErrNoDaemon
// says nothing listens on the socket.
//
// Ownership: every Buffer returned is owned by the caller and must be
// closed; nothing the client receives is left open on any error path. A
// Client is safe for concurrent use. No privilege is needed: the daemon
// decides, from the socket's peer credentials, what this process may
// allocate.
package client
