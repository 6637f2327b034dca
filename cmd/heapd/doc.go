// heapd's main package: flags and wiring only. The daemon itself is
// internal/daemon; the wire protocol is package protocol and
// docs/protocol.md.
//
//	heapd [--socket /run/heapd/socket] [--log-level info]
//
// heapd needs whatever access the heaps it serves need (usually root, or a
// user in the groups that own /dev/dma_heap/*), and write access to the
// socket's directory. It is Linux only.
package main
