// Package ledger is heapd's accounting: it charges every buffer heapd
// hands out to the owner's uid, and uncharges it only when no process
// anywhere still holds or maps it — not when the connection that asked
// for it closes, so passing fds to other processes, reconnecting or
// opening many connections do not escape a quota.
//
// A Ledger implements daemon.Ledger (and daemon.Lister). Check-and-charge
// is one step under one lock (Reserve), so parallel requests of one uid,
// from any number of connections and processes, cannot overshoot.
//
// How a buffer's lifetime is followed (docs/accounting.md has the
// measurements):
//
//   - Kernel DMA-BUFs: the ledger keeps a duplicate fd and reads the
//     count: line of its own /proc/self/fdinfo entry, the number of
//     references to the buffer's file (every fd in every process, every
//     mapping, fds in flight in SCM_RIGHTS messages, device imports). When
//     it is 1 only the ledger's duplicate is left: the ledger closes it
//     and the memory is freed.
//   - Emulated buffers (sealed memfds): the kernel keeps no such count for
//     a memfd, so the ledger hands the client a file it can follow: it
//     makes the memfd private to heapd's uid (mode 0600, so no other uid
//     can open it again through /proc), reopens it read-write for the
//     client, keeps a read-only file of its own, and asks the kernel
//     whether any writable file of the inode is still open by trying to
//     take a write lease (F_SETLEASE F_WRLCK) on its own file: the kernel
//     grants it only when no other file is open for writing, and the
//     client's file stays open as long as any fd, mapping or in-flight
//     message refers to it. Just as strict as count:.
//
// Commit does only what following the buffer needs (two syscalls for a
// kernel DMA-BUF, three for an emulated one); a buffer's inode and name,
// which only List reports, are read by List.
//
// A background sweep checks every live buffer each Config.Interval; a
// Reserve that would be refused first re-checks that uid's buffers, so a
// freed buffer makes room at once for its owner's next request.
//
// The ledger keeps nothing on disk: after a restart heapd starts with an
// empty ledger (see docs/accounting.md).
//
// Needs /proc (the daemon's own fdinfo; /proc/<pid> of others only for
// List's holders, which needs root to see every process). Safe for
// concurrent use. Linux only.
package ledger
