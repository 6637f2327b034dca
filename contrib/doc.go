// Package contrib holds no Go code: it is the home of the files that make
// heapd feel native on each system (systemd units, an OpenRC script, a
// udev rule; see docs/install.md). Its tests check those files: systemd's
// own verifier and exposure score, shell syntax, and that every path and
// mode agrees with the daemon's defaults, and that docs/configuration.md
// documents every flag heapd has.
//
// The tests need no privilege. Those that need a tool skip with a hint
// where it is missing (systemd-analyze: Debian's systemd package);
// HEAPD_REQUIRE_CONTRIB_TOOLS=1 turns those skips into failures.
package contrib
