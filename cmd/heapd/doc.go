// heapd's main package: flags and wiring only. The daemon itself is
// internal/daemon; the wire protocol is package protocol and
// docs/protocol.md.
//
//	heapd [--socket /run/heapd/socket] [--config /etc/heapd/heapd.toml] [--log-level info]
//	heapd --check-config FILE
//
// The policy file (docs/policy.md) says who may allocate what; without
// /etc/heapd/heapd.toml heapd runs with the built-in default policy
// (contrib/heapd.toml). Every buffer is charged to its owner's uid until
// no process holds it (docs/accounting.md); root lists them with heapctl
// ledger, through the admin socket SOCKET.admin.
//
// heapd needs whatever access the heaps it serves need (usually root, or a
// user in the groups that own /dev/dma_heap/*), and write access to the
// socket's directory. It is Linux only.
package main
