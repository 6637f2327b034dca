// Package policy is heapd's policy file (heapd.toml): who may allocate
// what, how much they may hold, how fast they may allocate.
//
// Parse reads a policy: an ordered list of rules, each matching peers by
// uid, user, gid, group (primary or supplementary), the daemon's own user,
// and optionally an active local logind session; each granting heaps by
// name pattern, with a per-uid quota (bytes and buffers, in total and per
// heap class), a largest single allocation and an allocation rate. The
// first rule that matches a peer decides; no match means deny. Unknown
// keys and bad values are errors that name the file, line and column.
// Parse is a pure function apart from resolving user and group names
// through a Lookup (nil: the system's passwd and group databases), and is
// fuzzed.
//
// Authorizer applies a Policy to requests (it implements
// daemon.Authorizer): it asks logind lazily (only when a session rule is
// reached), keeps each uid's rate-limit bucket, logs every decision with
// slog, and answers refusals with messages that name the deciding rule
// and what would allow the request. Quotas are returned as
// daemon.Limits and enforced by the ledger (package ledger), atomically
// with the charge.
//
// Default is the built-in default policy, the same text as
// contrib/heapd.toml: root and the daemon's own user unlimited; members of
// video or render, and users with an active local session, get the
// scanout heaps, contiguous and system within a quota; everyone else is
// denied. docs/policy.md describes the file.
//
// Everything here is safe for concurrent use once built; nothing needs
// privilege (the Authorizer asks logind over the system bus, which anyone
// may).
package policy
