#!/bin/bash
# fetch.sh - the Debian 12 pieces of a Xen stack for the emulated e2e test.
#
#	tests/xen/fetch.sh [CACHE]
#
# Downloads (apt-get download: nothing is installed) the Xen 4.17
# hypervisor, the Xen tools and libraries, the xenstore CLI, busybox-static
# and the kernel that linux-image-amd64 points at, into CACHE/debs, and
# unpacks them (dpkg -x) into CACHE/root.  Then makes what QEMU and the
# domain builder load fastest under emulation:
#   CACHE/xen      the hypervisor as ELF (QEMU's multiboot loader does not
#                  take the .gz and hangs silently when given it);
#   CACHE/vmlinux  the kernel as ELF, taken out of the bzImage: Xen and
#                  libxenguest then skip the xz step, which costs ~8 s per
#                  kernel under TCG.
# A second run with the same package versions downloads and unpacks
# nothing.  CACHE defaults to $TAPFS_XEN_CACHE, else /var/cache/tapfs-xen
# when writable, else ${XDG_CACHE_HOME:-~/.cache}/tapfs-xen.  It is kept
# out of the source tree on purpose (~75 MB of packages).
set -euo pipefail

default_cache() {
	if [ -n "${TAPFS_XEN_CACHE:-}" ]; then
		echo "$TAPFS_XEN_CACHE"
	elif mkdir -p /var/cache/tapfs-xen 2>/dev/null &&
	     [ -w /var/cache/tapfs-xen ]; then
		echo /var/cache/tapfs-xen
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/tapfs-xen"
	fi
}

C=${1:-$(default_cache)}
mkdir -p "$C/debs"

PKGS="xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common
xenstore-utils libxenmisc4.17 libxenstore4 libxentoolcore1 libxentoollog1
libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1
libxendevicemodel1 libxenhypfs1 libyajl2 busybox-static"

# kernel_pkg: the versioned image package behind linux-image-amd64.
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# uris PKG...: "URL FILENAME" of each package, from the local apt lists.
uris() {
	apt-get download --print-uris "$@" 2>/dev/null |
		awk "{ gsub(/'/, \"\", \$1); print \$1, \$2 }"
}

kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
	# A fresh machine: no package lists yet.
	echo "fetch: no package lists; running apt-get update" >&2
	apt-get update -q >&2
	kpkg=$(kernel_pkg)
fi
if [ -z "$kpkg" ]; then
	echo "fetch: cannot resolve linux-image-amd64" >&2
	exit 1
fi

# shellcheck disable=SC2086
list=$(uris $PKGS "$kpkg")
# shellcheck disable=SC2086
n_want=$(echo $PKGS "$kpkg" | wc -w)
if [ "$(echo "$list" | grep -c .)" -ne "$n_want" ]; then
	echo "fetch: apt cannot locate all of: $PKGS $kpkg" >&2
	exit 1
fi
files=$(echo "$list" | awk '{ print $2 }' | sort)

missing=
for f in $files; do
	[ -s "$C/debs/$f" ] || missing=1
done
if [ -n "$missing" ]; then
	echo "fetch: downloading $n_want packages into $C/debs" >&2
	# shellcheck disable=SC2086
	# (root: apt's _apt sandbox user cannot write this directory)
	(cd "$C/debs" &&
	 apt-get download -q -o APT::Sandbox::User=root $PKGS "$kpkg" >&2)
	# Keep only the versions wanted now.
	for f in "$C"/debs/*.deb; do
		echo "$files" | grep -qxF "$(basename "$f")" || rm -f "$f"
	done
fi

if [ "$(cat "$C/stamp" 2>/dev/null)" != "$files" ] ||
   [ ! -s "$C/xen" ] || [ ! -s "$C/vmlinux" ]; then
	echo "fetch: unpacking into $C/root" >&2
	rm -rf "$C/root" "$C/xen" "$C/vmlinux" "$C/stamp"
	mkdir -p "$C/root"
	for f in $files; do
		dpkg -x "$C/debs/$f" "$C/root"
	done
	# Of the kernel's ~400 MB of modules the test loads a few.
	find "$C/root/lib/modules" -name '*.ko' ! -path '*/drivers/block/*' \
		! -path '*/drivers/xen/*' ! -path '*/fs/fuse/*' -delete
	rm -rf "$C/root/usr/share/doc" "$C/root/usr/share/man"
	zcat "$C"/root/boot/xen-4.17-amd64.gz > "$C/xen.tmp"
	mv "$C/xen.tmp" "$C/xen"
	# The bzImage's payload is one xz stream; what it unpacks to is the
	# ELF vmlinux that both Xen (dom0) and libxenguest (domU) load as is.
	vmlinuz=$(find "$C/root/boot" -name 'vmlinuz-*' | head -n 1)
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 |
		cut -d: -f1)
	[ -n "$off" ] || { echo "fetch: no xz payload in $vmlinuz" >&2; exit 1; }
	xz -dc --single-stream < <(tail -c +$((off + 1)) "$vmlinuz") \
		> "$C/vmlinux.tmp"
	if [ "$(head -c 4 "$C/vmlinux.tmp" | od -An -c | tr -d ' ')" != \
	     '177ELF' ]; then
		echo "fetch: $vmlinuz did not unpack to an ELF kernel" >&2
		exit 1
	fi
	mv "$C/vmlinux.tmp" "$C/vmlinux"
	echo "$files" > "$C/stamp"
fi
echo "$C"
