#!/bin/bash
# test-rbd-handover.sh - handing a live rbd VBD from one host to another
# (docs/locking.md, docs/rbd.md), on a real one-node Ceph cluster
# (ceph-lib.sh: a cluster that cannot start fails the test, with why).
#
# Two daemons, A and B, stand for two hosts on one cluster.
# handover-lib.sh's scenario on an image made by "rbd create": a writer
# through a loop device on A's VBD, B standby beside it (its write and
# resume time out, naming the holder of the image's exclusive lock), A
# releases under the writer (EROFS after, reads go on), the writer goes
# on through B, and every acknowledged byte is what "rbd export" (another
# client) reads; B's timed-out write is not; "rbd lock ls" shows no lock
# left once both closed.  Then a released VBD nobody took over takes its
# image back with "resume NAME" and writes again.
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/ceph-lib.sh"
. "$TEST_DIR/handover-lib.sh"
requires python3 losetup dd cmp
requires_root

ceph_start
OPTS="ceph_conf=$CEPH_CONF,ceph_id=admin,ceph_pool=rbd"
handover_start "$OPTS" "$OPTS"

# out_rbd NAME: the image, as another client reads it.
out_rbd() {
	check_eq "$1: no exclusive lock left after both closed" "" \
		"$(rbd lock ls "rbd/$1" 2>&1)"
	check rbd export --no-progress "rbd/$1" "$T/out.raw"
}

check rbd create --size $((HO_SIZE / MiB))M rbd/ho
handover ho "open ho rbd:rbd/ho" "rbd:rbd/ho" out_rbd

# Released, then taken back by the old writer when nobody else took it.
ctl_ok "$GA" "open ho rbd:rbd/ho"
ctl_ok "$GA" "release ho"
check_eq "A released" released "$(ho_hold "$GA" ho)"
ctl_ok "$GA" "resume ho"
check_eq "A's resume takes it back" active "$(ho_hold "$GA" ho)"
check_fsop "A writes again" 4 -- pwrite "$GA/ho" 0 01020304
# What out_rbd's "no lock left" would see of a holder.
check_match "rbd lock ls shows A's lock" "exclusive lock|auto" \
	"$(rbd lock ls rbd/ho 2>&1)"
ctl_close "$GA" ho
check_eq "and none after the close" "" "$(rbd lock ls rbd/ho 2>&1)"

alive "at the end (B)"
tapfs_stop "$PID_B" "$T/B"
tapfs_stop "$PID_A" "$T/A"
summary
