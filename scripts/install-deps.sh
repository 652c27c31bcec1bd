#!/bin/sh
# install-deps.sh - install the Debian packages tapfs needs, when missing.
#
# Idempotent: checks each package with dpkg first and runs
# "apt-get update" + "apt-get install" only when something is missing.
# Usage: scripts/install-deps.sh [build|test|bench|fuzz|valgrind|xen|all]
# (default: all)
set -eu

BUILD_PKGS="gcc make pkg-config libc6-dev libfuse3-dev fuse3 libaio-dev
uuid-dev zlib1g-dev libcmocka-dev librbd-dev liburing-dev"
# The functional tests; man-db (man, lexgrog) and groff-base render and
# check the manual pages (test-man.sh).
TEST_PKGS="fio qemu-utils qemu-system-common e2fsprogs util-linux kmod
man-db groff-base"
# The rbd driver's tests (tests/ceph): a throw-away one-node Ceph cluster
# (mon, mgr, one bluestore OSD) and the rbd/ceph CLIs as the oracle;
# qemu-block-extra: qemu-img's rbd driver (a qcow2 child over an rbd
# parent, read by QEMU's code too).
CEPH_PKGS="ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra"
# The bench's FUSE peers: qemu-storage-daemon; nbdkit + nbdfuse (loop table).
# (bench/fuse-uring-null's liburing-dev is a build package: -o uring.)
BENCH_PKGS="qemu-system-common nbdkit libnbd-bin"
FUZZ_PKGS="clang libclang-rt-14-dev"
VALGRIND_PKGS="valgrind"
# The emulated-Xen test (tests/xen): QEMU, and what builds its initramfs.
XEN_PKGS="qemu-system-x86 cpio xz-utils gzip util-linux coreutils bash"

want=${1:-all}
case "$want" in
build) pkgs=$BUILD_PKGS ;;
test) pkgs="$BUILD_PKGS $TEST_PKGS $CEPH_PKGS $XEN_PKGS" ;;
bench) pkgs="$BUILD_PKGS $TEST_PKGS $CEPH_PKGS $BENCH_PKGS" ;;
all) pkgs="$BUILD_PKGS $TEST_PKGS $CEPH_PKGS $BENCH_PKGS $XEN_PKGS" ;;
fuzz) pkgs="$BUILD_PKGS $FUZZ_PKGS" ;;
valgrind) pkgs="$BUILD_PKGS $VALGRIND_PKGS" ;;
xen) pkgs="$XEN_PKGS" ;;
*) echo "usage: $0 [build|test|bench|fuzz|valgrind|xen|all]" >&2; exit 2 ;;
esac

missing=
for p in $pkgs; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing" >&2
	echo "install-deps: run as root (or: sudo apt-get install$missing)" >&2
	exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
