# shellcheck shell=bash
# ceph-lib.sh - a throw-away one-node Ceph cluster for the rbd tests.
#
# Source it after lib.sh:
#
#	. "$(dirname "$0")/lib.sh"
#	. "$TEST_DIR/ceph-lib.sh"
#	ceph_start            # or the test ends here, FAILED, saying why
#	rbd create --size 64M rbd/t1
#	same_export NAME VBDFILE rbd/t1   # also export_to, ctl_says
#	qsd_export rbd/t1 FILE   # QEMU's rbd driver on the image, qsd_stop
#
# ceph_start runs tests/ceph/start.sh (mon, mgr, one bluestore OSD, pool
# "rbd") in a mktemp directory under /dev/shm and registers its stop (by
# the PIDs start.sh recorded, tests/ceph/stop.sh) on the cleanup stack.
# It exports CEPH_CONF, which the rbd/ceph CLIs and tapfs (its default
# ceph_conf) read, and sets CEPH_DIR, CEPH_START_MS and CEPH_OPTS (the
# tapfs mount options for this cluster, pool rbd).  A cluster that
# cannot start is a failed test with the reason, never a skip: the
# packages come from scripts/install-deps.sh (make check installs them).

CEPH_SCRIPTS=$TOP/tests/ceph
# What the tests need from Ceph, beyond start.sh's defaults: a client that
# died holding an image's lock is blocklisted after 10 s, not 30
# (clients ping their watches every 5 s: not lower); discards under
# 64 KiB zero instead of being skipped.
CEPH_TEST_CONF=$'[osd]\nosd_client_watch_timeout = 10\n[client]\nrbd_skip_partial_discard = false'

# ceph_stop: stop the cluster of ceph_start (its daemons by PID) and
# remove its directory; a daemon that does not exit is a failed check.
ceph_stop() {
	[ -n "${CEPH_DIR:-}" ] || return 0
	if ! CEPH_MINI_STOP_GRACE=5 "$CEPH_SCRIPTS/stop.sh" "$CEPH_DIR"; then
		fail "ceph_stop" "a daemon of $CEPH_DIR did not exit"
	fi
	CEPH_DIR=
}

ceph_start() {
	local c t0 out
	for c in ceph-mon ceph-mgr ceph-osd ceph rbd monmaptool \
		 ceph-authtool; do
		if ! command -v "$c" >/dev/null 2>&1; then
			fail "ceph_start" "$c is missing: run scripts/install-deps.sh test (Debian packages ceph-mon ceph-mgr ceph-osd ceph-common)"
			summary
		fi
	done
	CEPH_DIR=$(mktemp -d /dev/shm/tapfs-ceph.XXXXXX) || {
		fail "ceph_start" "mktemp under /dev/shm failed"
		summary
	}
	# Before start.sh: a start killed half-way leaves PIDs in $CEPH_DIR/run.
	on_exit ceph_stop
	t0=$(date +%s%N)
	if ! out=$(CEPH_MINI_CONF_EXTRA=$CEPH_TEST_CONF \
		   CEPH_MINI_TIMEOUT=${CEPH_START_TIMEOUT:-120} \
		   "$CEPH_SCRIPTS/start.sh" "$CEPH_DIR" 2>"$T/ceph-start.err"); then
		fail "ceph_start" "the Ceph cluster did not start: $(tail -n 5 \
			"$T/ceph-start.err"; tail -n 5 "$CEPH_DIR"/log/*.log \
			2>/dev/null | tail -n 8)"
		summary
	fi
	eval "$out"
	CEPH_OPTS="ceph_conf=$CEPH_CONF,ceph_id=admin,ceph_pool=rbd"
	CEPH_START_MS=$((($(date +%s%N) - t0) / 1000000))
	ok "ceph_start: cluster up in $CEPH_START_MS ms ($CEPH_DIR)"
}

# export_to IMAGE FILE: "rbd export" (another client, reading the OSD) of
# IMAGE (POOL/IMAGE[@SNAP]) into FILE; a failed check if it fails.
export_to() {
	rm -f "$2"
	rbd export --no-progress "$1" "$2" >/dev/null 2>&1 ||
		{ fail "rbd export $1" "failed"; return 1; }
}

# same_export NAME VBDFILE IMAGE: the VBD reads exactly what rbd export
# of IMAGE gives.
same_export() {
	export_to "$3" "$T/export.raw" || return 1
	if cmp -s "$2" "$T/export.raw"; then
		ok "$1"
	else
		fail "$1" "$(cmp "$2" "$T/export.raw" 2>&1 | head -n 1)"
	fi
}

# ctl_says GROUPDIR ERE: the status line of .ctl matches ERE.
ctl_says() {
	check_match "$1/.ctl says /$2/" "$2" "$(ctl_status "$1")"
}

# qsd_export IMAGE FILE: qemu-storage-daemon serving IMAGE (POOL/IMAGE) of
# this cluster read-write as a FUSE export at FILE, through QEMU's rbd
# driver (librbd's automatic lock mode: no lock until its first write).
# PID in QSD_PID; stopped by that PID, FILE unmounted, at exit.  1 (and
# a failed check) if the export does not come up.
qsd_export() {
	local pool=${1%%/*} image=${1#*/}
	: >"$2"
	# Runs after the stop below (LIFO): an export qsd did not take down.
	on_exit "! is_fuse_mounted '$2' || fusermount3 -uz '$2'"
	bg_start "qsd.${image//\//_}" qemu-storage-daemon \
		--blockdev "driver=rbd,node-name=r,pool=$pool,image=$image,conf=$CEPH_CONF,user=admin" \
		--export "type=fuse,id=e,node-name=r,mountpoint=$2,writable=on"
	QSD_PID=$BG_PID
	if ! wait_mounted "$2" 20 "$QSD_PID"; then
		fail "qsd_export $1" "no FUSE export at $2: $(tail -n 3 \
			"$T/qsd.${image//\//_}.out")"
		return 1
	fi
}

# qsd_stop PID FILE: SIGTERM to that qemu-storage-daemon; it must exit
# and take its export at FILE down.
qsd_stop() {
	kill -TERM "$1" 2>/dev/null
	if ! wait_gone "$1" 30; then
		fail "qsd_stop" "qemu-storage-daemon $1 still running after 30 s"
		return 1
	fi
	wait "$1" 2>/dev/null
	if is_mounted "$2"; then
		fail "qsd_stop" "$2 still mounted after qemu-storage-daemon exited"
		return 1
	fi
	ok "qsd_stop: qemu-storage-daemon $1 exited, $2 unmounted"
}
