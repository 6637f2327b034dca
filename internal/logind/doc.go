// Package logind asks systemd-logind, over D-Bus, whether a user has an
// active local session: the question "is this user sitting at this
// machine?" that heapd's policy can use (rule key session).
//
// logind is optional. Where there is none (openrc, runit, containers, a
// system without a system bus) every question answers ErrUnavailable, and
// callers treat that as "no session", never as a failure of their own.
// The bus address is injectable (Config.Address) so tests can run a fake
// logind on a private dbus-daemon (package logindtest).
//
// A Client needs no privilege: logind answers ListSessions and session
// properties to anyone. It is safe for concurrent use; it connects on
// first use and reconnects after the bus or logind went away. Linux only
// in practice (D-Bus over a Unix socket), but it builds everywhere.
package logind
