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

# Two loops taking images over at once.  A standby VBD takes its image
# over at its first write, on the loop that owns it, whenever that comes:
# two such writes on two loops open two images on the daemon's one
# cluster connection at the same time.  Three rounds.
tapfs_start "$T/C" "$T/SC" "$OPTS,workers=2" || summary
PID_C=$TAPFS_PID
GC=$T/C/g
check mkdir "$GC"
check rbd create --size 8M rbd/two1
check rbd create --size 8M rbd/two2
head -c 65536 /dev/urandom >"$T/two.pat"
declare -A W
for round in 1 2 3; do
	ctl_ok "$GC" "open two1 rbd:rbd/two1 standby"
	ctl_ok "$GC" "open two2 rbd:rbd/two2 standby"
	check_eq "round $round: two1 and two2 on the two loops" "1 0" \
		"$(stat_val "$GC" two1 loop) $(stat_val "$GC" two2 loop)"
	for v in two1 two2; do
		bg_start "w-$v-$round" dd if="$T/two.pat" of="$GC/$v" bs=64k \
			seek=$round oflag=direct conv=notrunc,fsync status=none
		W[$v]=$BG_PID
	done
	for v in two1 two2; do
		bg_wait "${W[$v]}" 60
		check_eq "round $round: the first write to $v took it over" \
			0 "$BG_RC"
		check_eq "round $round: $v active" active "$(ho_hold "$GC" $v)"
	done
	ctl_close "$GC" two1
	ctl_close "$GC" two2
done
for v in two1 two2; do
	check rbd export --no-progress "rbd/$v" "$T/$v.raw"
	for round in 1 2 3; do
		check_eq "$v: round $round's write is in the image" \
			"$(md5sum <"$T/two.pat")" "$(dd if="$T/$v.raw" bs=64k \
			skip=$round count=1 status=none | md5sum)"
	done
done
check_eq "two loops: one connection to the cluster" 1 \
	"$(grep -c "rbd: connected to the Ceph cluster" "$TAPFS_LOG")"
alive "at the end (C)"
tapfs_stop "$PID_C" "$T/C"
summary
