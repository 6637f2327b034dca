#!/usr/bin/env bash
# build-kernel.sh VERSION — build (or find cached) the VM tier's kernel.
#
#   test/vm/build-kernel.sh 6.1     # or 6.12
#
# Prints one line on stdout: the directory holding the artifacts
#   bzImage          the kernel
#   kernelrelease    `uname -r` of that kernel
#   config           the full .config it was built from
#   modules/*.ko     every module the fragment builds (vkms, vgem and the
#                    helpers they depend on); the guest's /init reads the
#                    dependencies from each module's .modinfo
# Everything else (progress, build log tail on failure) goes to stderr.
#
# The source is Debian's linux-source-VERSION package. Artifacts are cached
# under ${HEAPD_VM_CACHE:-$HOME/.cache/heapd-vm}, keyed by architecture,
# kernel version, source package version, the config fragment and this
# script, so a second run returns at once. Environment:
#   HEAPD_VM_CACHE   cache directory (default $HOME/.cache/heapd-vm)
#   HEAPD_VM_ARCH    kernel architecture: x86_64 (default), arm64 or arm
#                    (cross-compiled with Debian's gcc-aarch64-linux-gnu or
#                    gcc-arm-linux-gnueabihf)
#   HEAPD_VM_JOBS    make -j (default: number of CPUs)
#   HEAPD_VM_NO_APT  set to 1 to never run apt-get (also HEAPD_NO_APT)
set -euo pipefail

usage() { echo "usage: $0 VERSION   (6.1 or 6.12)" >&2; exit 2; }
log() { echo "build-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || usage
version=$1
case $version in
6.1 | 6.12) ;;
*) usage ;;
esac

arch=${HEAPD_VM_ARCH:-x86_64}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/kernel/$arch.config
cache=${HEAPD_VM_CACHE:-$HOME/.cache/heapd-vm}
jobs=${HEAPD_VM_JOBS:-$(nproc)}

# Per-architecture kernel make ARCH, cross compiler, image path and the
# Debian packages needed to build and boot it. The arm64 kernel also runs
# 32-bit (armhf) guests through CONFIG_COMPAT: there is no separate kernel
# for vmrunner's arm-on-arm64.
cross=
case $arch in
x86_64)
	karch=x86_64
	image=arch/x86/boot/bzImage
	imagename=bzImage
	archpkgs=(qemu-system-x86)
	;;
arm64)
	karch=arm64
	cross=aarch64-linux-gnu-
	image=arch/arm64/boot/Image
	imagename=Image
	# gcc-arm-linux-gnueabihf too: the armhf guests on this kernel (the C
	# client's static test programs are cross-compiled)
	archpkgs=(qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross
		gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
	;;
arm)
	karch=arm
	cross=arm-linux-gnueabihf-
	image=arch/arm/boot/zImage
	imagename=zImage
	archpkgs=(qemu-system-arm gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
	;;
*) die "unsupported HEAPD_VM_ARCH=$arch (supported: x86_64, arm64, arm)" ;;
esac
[ -f "$fragment" ] || die "no config fragment $fragment"

# --- packages: mk/apt-install.sh installs what dpkg says is missing (under
# a lock: make test builds two kernels at once)
pkgs=("${archpkgs[@]}" "linux-source-$version" build-essential flex bison bc
	libelf-dev libssl-dev xz-utils)
if command -v dpkg-query >/dev/null; then
	"$here/../../mk/apt-install.sh" "${pkgs[@]}" || die "could not install ${pkgs[*]}"
	srcver=$(dpkg-query -W -f='${Version}' "linux-source-$version")
else
	log "no dpkg: not installing packages; using /usr/src as it is"
	srcver=unknown
fi
tarball=/usr/src/linux-source-$version.tar.xz
[ -f "$tarball" ] || die "$tarball missing (Debian package linux-source-$version)"
if [ "$srcver" = unknown ]; then
	srcver=$(stat -c %s-%Y "$tarball")
fi

# --- cache key: anything that changes the result changes the directory
key=$({
	echo "$arch $version $srcver"
	cat "$fragment" "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)
out=$cache/kernels/$arch-$version-$key
if [ -f "$out/ok" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache/src" "$cache/build" "$cache/kernels"
# Two builds of the same kernel at once (two make runs) would share a build
# tree: take turns, then look at the cache again.
exec 9>"$cache/build/.lock-$arch-$version"
flock 9
if [ -f "$out/ok" ]; then
	echo "$out"
	exit 0
fi

start=$(date +%s)
phase=$start
# lap NAME: log how long the phase that just ended took.
lap() {
	local now
	now=$(date +%s)
	log "$1 took $((now - phase)) s"
	phase=$now
}
src=$cache/src/linux-source-$version
# Every architecture builds out of the same unpacked source: unpack it once,
# under a lock of its own.
exec 8>"$cache/src/.lock-$version"
flock 8
if [ "$(cat "$src/.heapd-srcver" 2>/dev/null)" != "$srcver" ]; then
	log "unpacking $tarball"
	rm -rf "$src"
	tar -C "$cache/src" -xJf "$tarball"
	[ -d "$src" ] || die "$tarball did not unpack to $src"
	echo "$srcver" >"$src/.heapd-srcver"
	lap unpacking
fi
exec 8>&-

# Out-of-tree build: the source stays pristine and a changed fragment
# rebuilds only what changed.
build=$cache/build/$arch-$version
mkdir -p "$build"
# A `make vmtest ARCH=arm64` of heapd's Makefile exports ARCH and
# MAKEFLAGS: neither may reach the kernel's make.
unset ARCH MAKEFLAGS MFLAGS MAKELEVEL
kmake() { make -C "$src" O="$build" ARCH="$karch" ${cross:+CROSS_COMPILE="$cross"} "$@"; }
buildlog=$build/heapd-build.log
: >"$buildlog"
run() {
	if ! "$@" >>"$buildlog" 2>&1; then
		tail -n 40 "$buildlog" >&2
		die "failed: $* (full log: $buildlog)"
	fi
}

log "configuring $arch $version ($srcver): tinyconfig + ${fragment#"$here"/}"
run kmake tinyconfig
run env KCONFIG_CONFIG="$build/.config" "$src/scripts/kconfig/merge_config.sh" \
	-m -O "$build" "$build/.config" "$fragment"
run kmake olddefconfig

# Every line of the fragment must hold in the final .config.
lost=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		grep -qxF -- "$line" "$build/.config" ||
			lost+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$build/.config" || echo absent))")
		;;
	"# CONFIG_"*" is not set")
		opt=${line#"# "}
		opt=${opt%" is not set"}
		! grep -qE "^$opt=" "$build/.config" || lost+=("$line (got: $(grep -E "^$opt=" "$build/.config"))")
		;;
	esac
done <"$fragment"
if [ ${#lost[@]} -gt 0 ]; then
	log "these options of ${fragment#"$here"/} did not stick on $version (missing dependency or renamed?):"
	printf '  %s\n' "${lost[@]}" >&2
	die "kernel config check failed"
fi
lap configuring

log "building bzImage and modules with -j$jobs (a few minutes; log: $buildlog)"
run kmake -j"$jobs" "$imagename" modules
lap compiling

tmp=$out.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp/modules"
cp "$build/$image" "$tmp/$imagename"
cp "$build/.config" "$tmp/config"
kmake -s kernelrelease 2>/dev/null >"$tmp/kernelrelease"
# modules.order lists what this configuration built (.ko before 6.2, .o
# after); a find would also pick up stale modules of an earlier
# configuration built in the same tree.
while IFS= read -r m; do
	cp "$build/${m%.*}.ko" "$tmp/modules/"
done <"$build/modules.order"
ls "$tmp/modules"/*.ko >/dev/null 2>&1 || die "the build produced no modules"
touch "$tmp/ok"
rm -rf "$out"
mv "$tmp" "$out"
log "built $arch $version ($(cat "$out/kernelrelease")) in $(($(date +%s) - start)) s: $(cd "$out/modules" && echo *.ko)"
echo "$out"
