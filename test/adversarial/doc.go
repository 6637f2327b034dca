// Package adversarial holds no code: its tests attack the real heapd
// binary the way a hostile or broken local client could (garbage and
// truncated packets, wrong versions, forged lengths, unsolicited fds of
// every kind, absurd sizes, connection floods, slowloris, clients that
// vanish mid-request or never read), and check after each attack that
// heapd still serves a well-behaved client, that its fds, goroutines and
// RSS return to the baseline, and that the ledger balances to zero. It
// also checks data isolation between users, heapd at RLIMIT_NOFILE
// exhaustion, and a randomized soak (make soak).
//
// The tests start heapd through internal/daemon/daemontest: on the host
// it serves the emulated heap; in the VM tier (make vmtest
// PKG=./test/adversarial) the same tests run against the real kernel
// heaps and udmabuf. They need root (to run helpers as another uid and to
// set heapd's fd limit) and skip with a hint otherwise.
// docs/security.md says what they prove.
package adversarial
