// Package logindtest runs a fake systemd-logind on a private dbus-daemon,
// for tests of session rules. It is imported only by tests.
//
// StartBus needs the dbus-daemon binary (Debian package dbus-daemon). Where
// it is missing the test skips with that hint, unless RequireEnv is set (CI
// sets it), and then it fails. In the VM tier (HEAPD_VM=1: the guest has no
// D-Bus at all) it reports so and returns "": callers then test the
// "no logind" case instead, which is what that system really is.
package logindtest
