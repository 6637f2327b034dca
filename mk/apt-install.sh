#!/usr/bin/env bash
# mk/apt-install.sh PACKAGE... — install the Debian packages dpkg says are
# missing (nothing to do, and no apt-get, when all are there).
#
# The test tiers call it for what they need (test/vm/build-kernel.sh,
# internal/uapi/testdata/abi/gen.sh), several at once when make test
# builds kernels side by side: apt-get refuses to run twice, so every call
# takes the same lock first and looks again under it. Environment:
#   HEAPD_NO_APT=1 (or HEAPD_VM_NO_APT=1)  never run apt-get: fail instead
set -euo pipefail
command -v dpkg-query >/dev/null || exit 0 # not Debian: the caller checks what it needs

missing() {
	local p st
	for p in "$@"; do
		st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		[ "${st:0:2}" = ii ] || echo "$p"
	done
}

[ -n "$(missing "$@")" ] || exit 0
exec 7>"${TMPDIR:-/tmp}/heapd-apt.lock"
flock 7
mapfile -t need < <(missing "$@")
[ ${#need[@]} -gt 0 ] || exit 0
if [ "${HEAPD_NO_APT:-${HEAPD_VM_NO_APT:-}}" = 1 ]; then
	echo "apt-install: missing Debian packages: ${need[*]}" >&2
	exit 1
fi
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
echo "apt-install: installing ${need[*]}" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
