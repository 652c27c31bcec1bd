#!/bin/bash
# build-initrd.sh - the dom0 and guest initramfs of the emulated-Xen test.
#
#	tests/xen/build-initrd.sh CACHE WORKDIR
#
# CACHE is what fetch.sh made (Debian's Xen, kernel and busybox unpacked
# in CACHE/root).  Writes WORKDIR/dom0-initrd.cpio and
# WORKDIR/guest-initrd.gz.
#
# dom0 gets: busybox; the kernel modules for Xen backends, loop and FUSE;
# Xen's tools, libraries and /etc/xen/scripts from the packages; tapfs as
# "make install" installs it (daemon, tapfs-img, mount.tapfs, and
# block-tapfs in /etc/xen/scripts), freshly built; the host programs the
# hotplug scripts need that busybox lacks or does differently (bash,
# flock, coreutils stat, timeout and readlink, util-linux losetup); the shared
# libraries of all of these (ldd); the guest's kernel and initramfs; and
# the test (dom0-init as /init, dom0-test.sh, the guest configs).
# The guest gets busybox, xen-blkfront and guest-init as /init.
set -euo pipefail

C=${1:?usage: build-initrd.sh CACHE WORKDIR}
W=${2:?usage: build-initrd.sh CACHE WORKDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
X=$C/root
KV=$(basename "$(find "$X/lib/modules" -mindepth 1 -maxdepth 1 -type d |
	head -n 1)")
M=$X/lib/modules/$KV/kernel
R=$W/rd0
G=$W/rdg
LIBDIR=lib/x86_64-linux-gnu
XENLIBS=$X/usr/lib/x86_64-linux-gnu

rm -rf "$R" "$G"
mkdir -p "$W"

mk_base() {
	mkdir -p "$1"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,mnt,lib/modules} \
		"$1"/{var/log,var/lib,usr/bin,usr/sbin,usr/lib,$LIBDIR,lib64}
	cp "$X/bin/busybox" "$1/bin/busybox"
	ln -s busybox "$1/bin/sh"
}

# libs FILE...: copy the shared libraries FILE needs (Xen's from the
# packages, the rest from the host) into dom0.
libs() {
	local l
	for l in $(LD_LIBRARY_PATH=$XENLIBS ldd "$@" 2>/dev/null |
		   awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
		cp -Ln "$l" "$R/$LIBDIR/"
	done
}

# ---- guest -----------------------------------------------------------------
mk_base "$G"
cp "$M/drivers/block/xen-blkfront.ko" "$G/lib/modules/"
install -m 0755 "$HERE/guest-init" "$G/init"
(cd "$G" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/guest-initrd.gz"

# ---- dom0 ------------------------------------------------------------------
mk_base "$R"
for m in drivers/block/loop.ko drivers/block/xen-blkback/xen-blkback.ko \
	 fs/fuse/fuse.ko drivers/xen/xen-evtchn.ko drivers/xen/xen-privcmd.ko \
	 drivers/xen/xenfs/xenfs.ko drivers/xen/xen-gntdev.ko \
	 drivers/xen/xen-gntalloc.ko; do
	cp "$M/$m" "$R/lib/modules/"
done

XB=usr/lib/xen-4.17/bin
mkdir -p "$R/$XB" "$R/etc/xen" "$R/var/lib/xenstored" "$R/var/log/xen" \
	"$R/e2e" "$R/guest"
for b in xl xenstored xenconsoled xenconsole xen-init-dom0 \
	 libxl-save-helper; do
	cp "$X/$XB/$b" "$R/$XB/"
done
ln -s "../lib/xen-4.17/bin/xl" "$R/usr/sbin/xl"
cp -a "$X"/usr/bin/xenstore* "$R/usr/bin/"
cp -a "$XENLIBS"/lib{xen,xl,yajl}*.so* "$R/$LIBDIR/"
cp -a "$X/etc/xen/scripts" "$R/etc/xen/"
cp "$X/etc/xen/xl.conf" "$R/etc/xen/"
libs "$R/$XB"/* "$R"/usr/bin/xenstore
# xl dlopens libgcc_s (pthread_cancel); ldd does not show it.
cp -L "/$LIBDIR/libgcc_s.so.1" "$R/$LIBDIR/"

# tapfs, installed the way an administrator does it.
make -s -C "$TOP" install DESTDIR="$R" >/dev/null
[ -x "$R/etc/xen/scripts/block-tapfs" ] || {
	echo "build-initrd: make install did not install block-tapfs" >&2
	exit 1
}
libs "$R"/usr/local/sbin/tapfs "$R"/usr/local/bin/tapfs-img
if [ -n "${XEN_E2E_TRACE:-}" ]; then
	# Debugging: trace block-tapfs with timestamps into the hotplug log.
	S=$R/etc/xen/scripts
	mv "$S/block-tapfs" "$S/block-tapfs.real"
	cat > "$S/block-tapfs" <<'TRACE'
#!/bin/bash
exec bash -c 'PS4="+ \$EPOCHREALTIME \${FUNCNAME[0]:-main}: "; set -x
	. /etc/xen/scripts/block-tapfs.real' /etc/xen/scripts/block-tapfs "$@"
TRACE
	chmod 0755 "$S/block-tapfs"
fi

# Host programs: busybox has no flock, and its losetup has no
# --direct-io/--show/-j; coreutils' stat, timeout and readlink are what the
# scripts are written against.
for b in /usr/bin/bash /usr/bin/flock /usr/bin/stat /usr/bin/timeout \
	 /usr/bin/readlink /usr/sbin/losetup; do
	cp -L "$b" "$R$b"
	libs "$b"
done
ln -sf ../usr/bin/bash "$R/bin/bash"
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"

# The guest, and the test.
cp "$C/vmlinux" "$R/guest/vmlinux"
cp "$W/guest-initrd.gz" "$R/guest/initrd.gz"
install -m 0755 "$HERE/dom0-init" "$R/init"
install -m 0755 "$HERE/dom0-test.sh" "$R/e2e/dom0-test.sh"
cp "$HERE"/guest[0-9].cfg "$R/e2e/"

# Uncompressed: dom0 would spend seconds inflating it under emulation.
(cd "$R" && find . | cpio -o -H newc --quiet) > "$W/dom0-initrd.cpio"
rm -rf "$R" "$G"
