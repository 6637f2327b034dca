// Package daemon is heapd's server: it accepts connections on a
// SOCK_SEQPACKET Unix socket, identifies each peer from the socket
// (SO_PEERCRED, SO_PEERGROUPS, /proc read under a pidfd: never from what
// the client says), and serves the protocol of package protocol: list
// heaps, allocate (by heap name, by size or image description, in
// batches), my usage, and heap events.
//
// Policy and accounting plug in through two interfaces the server calls on
// every allocation: an Authorizer (who may allocate what, and the Limits
// of the rule that decided; heapd uses package policy, BuiltinPolicy is
// the fallback for embedders and tests) and a Ledger (quota
// check-and-charge as one step through Reserve/Commit/Cancel; heapd uses
// package ledger, which follows each buffer until no process holds it;
// Tally is the fallback). A Reservation that implements HandOff learns
// when the daemon has closed its own fds of the buffers it sent. Errors
// become wire codes in exactly one place (toWire).
//
// ServeAdmin serves a second, root-only socket (ListenAdmin, the main
// socket's path plus AdminSuffix): JSON lines, {"request":"ledger"} lists
// the live buffers of a Ledger that is a Lister (heapctl ledger).
//
// Robustness is part of the design, not an afterthought: fds that arrive
// with a request are closed (no request carries any); MSG_CTRUNC and
// oversized packets end the connection with a PROTOCOL error; each
// connection has at most MaxInFlight requests in progress and a reply
// queue of the same bound; replies that the client does not read within
// WriteTimeout get it disconnected; events past EventQueue collapse into
// one overflow event; connections are limited in total and per uid; a
// connection that closes cancels its work and releases everything it held.
// Serve shuts down gracefully: it stops accepting, answers the requests in
// progress, and closes.
//
// Listen creates the socket (mode 0666, a lock file beside it, stale
// sockets replaced, live ones refused); Activated takes a socket passed by
// systemd; Notify speaks sd_notify. None needs systemd.
//
// The Server is safe for concurrent use. Allocating needs whatever access
// the heaps need (usually root); everything else needs none. Linux only.
package daemon
