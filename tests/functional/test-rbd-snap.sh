#!/bin/bash
# test-rbd-snap.sh - rbd snapshots, rbd parents, steal and a stopped OSD,
# on a real one-node Ceph cluster (ceph-lib.sh; no cluster: FAILED).
#
# (a) "snapshot NAME" of an rbd VBD while fio --verify writes through it
#     (rate-limited, so that it is still writing): an RBD snapshot
#     tapfs.1, listed in the .ctl chain line, fio verifies with 0 errors.
#     Then, still under fio: pause, flush, "rbd export" of the image (the
#     data at that point), snapshot (tapfs.2), resume: "rbd export" of
#     IMAGE@tapfs.2 equals that copy, and fio goes on writing.  The
#     snapshots open read-only as rbd:POOL/IMAGE@SNAP (equal to rbd
#     export), read-write is refused, a missing snapshot named.
# (b) A golden image in the cluster: rbd import, snapshot @base; a qcow2
#     child made by qemu-img (-b rbd:rbd/gold@base -F raw, QEMU's rbd
#     driver reading the cluster) opens in tapfs with the chain
#     qcow2 -> rbd; reads fall through to the snapshot, writes go to the
#     child: qemu-img convert of the child (QEMU's qcow2 and rbd code)
#     equals the VBD, and the golden image is unchanged.  The same child
#     made by tapfs-img create -b rbd:... (no qemu-img): qemu-img info says
#     what it says of qemu-img's child, qemu-img check and compare (QEMU's
#     rbd driver under it) find it clean and equal to the golden image,
#     tapfs-img info shows the rbd parent in its chain, tapfs opens it;
#     a missing rbd parent and a VHD child of one are refused, no file
#     left behind.
# (c) steal: a second daemon holds an image, writes and fsyncs, and is
#     killed with kill -9; a plain open is refused with the holder named;
#     "open ... steal" takes the lock (the holder is blocklisted) and the
#     fsync'd data is there; steal from this daemon's own VBD is refused,
#     also from a VBD on another loop (-o workers=2).
# (d) The OSD stopped (SIGSTOP) for 2 s under fio: I/O stalls and resumes,
#     0 errors.  Stopped past -o deadline_ms=5000: the waiting client gets
#     EIO after the deadline, .ctl says why, the daemon lives; after
#     SIGCONT the image opens again.
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/ceph-lib.sh"
requires fio cmp qemu-img python3

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
T0=$SECONDS

ceph_start
OPTS=$CEPH_OPTS

# fio_bg NAME FILE SIZE RATE: fio --verify writing FILE in the
# background, at most RATE 4 KiB writes a second (so that it is still
# writing while the test acts); its PID in FIO, its report in
# $T/NAME.json for fio_check.
fio_bg() {
	bg_start "$1" fio --name="$1" --output-format=json \
		--output="$T/$1.json" --filename="$2" --ioengine=libaio \
		--direct=1 --rw=randwrite --bs=4k --size="$3" --iodepth=32 \
		--rate_iops="$4" --verify=crc32c --verify_fatal=1 \
		--verify_state_save=0 --do_verify=1 --randrepeat=0
	FIO=$BG_PID
}

# writes_above GROUPDIR NAME N: the VBD has completed more than N writes.
writes_above() { [ "$(stat_val "$1" "$2" writes)" -gt "$3" ] 2>/dev/null; }

tapfs_start "$M" "$S" "$OPTS" || summary
PID1=$TAPFS_PID
LOG1=$TAPFS_LOG
check mkdir "$G"

# ---- (a) snapshots of a running rbd VBD -------------------------------------

ctl_ok "$G" "create s rbd 16M"
fio_bg fio-snap "$G/s" 16M 800		# 5 s of writes or more
check wait_for 60 writes_above "$G" s 100
ctl_ok "$G" "snapshot s"
check_match "chain line lists the snapshot" \
	"^s running rbd $((16 * MiB)) rw rbd:rbd/g.s \\(snapshots: tapfs\\.1\\)$" \
	"$(ctl_line "$G" s)"
# The data at one point, under load: paused, flushed, exported.
ctl_ok "$G" "pause s"
ctl_ok "$G" "flush s"
export_to rbd/g.s "$T/at-pause.raw"
ctl_ok "$G" "snapshot s"
check_match "a paused VBD stays paused over its snapshot" "^s paused " \
	"$(ctl_line "$G" s)"
w_snap=$(stat_val "$G" s writes)
ctl_ok "$G" "resume s"
check_match "chain line lists both" "\\(snapshots: tapfs\\.1 tapfs\\.2\\)$" \
	"$(ctl_line "$G" s)"
bg_wait $FIO 180
fio_check "fio verify across two snapshots" "$T/fio-snap.json" "$BG_RC"
check writes_above "$G" s "$w_snap"	# it was writing all along
check_eq "s.errors" 0 "$(stat_val "$G" s errors)"
export_to rbd/g.s@tapfs.2 "$T/snap2.raw"
check cmp "$T/at-pause.raw" "$T/snap2.raw"
check_not cmp -s "$T/snap2.raw" "$G/s"	# the image went on changing
check rbd snap ls rbd/g.s

ctl_ok "$G" "open s1 rbd:rbd/g.s@tapfs.1 ro"
same_export "s1 reads rbd export of g.s@tapfs.1" "$G/s1" rbd/g.s@tapfs.1
check_match "s1 chain line" "^s1 running rbd .* ro rbd:rbd/g.s@tapfs\\.1$" \
	"$(ctl_line "$G" s1)"
ctl_close "$G" s1
ctl_err "$G" "open s1 rbd:rbd/g.s@tapfs.1" EINVAL
ctl_says "$G" "g\\.s@tapfs\\.1 is a snapshot: it opens read-only only"
ctl_err "$G" "open s1 rbd:rbd/g.s@nosuch ro" ENOENT
ctl_says "$G" "no snapshot 'nosuch' of image rbd/g\\.s"
ctl_ok "$G" "open s2 rbd:rbd/g.s@tapfs.2 ro"
ctl_err "$G" "snapshot s2" EINVAL
ctl_close "$G" s2

# ---- (b) a qcow2 child over an rbd golden image -------------------------------

head -c $((8 * MiB)) /dev/urandom >"$T/gold.raw"
check rbd import --no-progress "$T/gold.raw" rbd/gold
check rbd snap create rbd/gold@base
check qemu-img create -q -f qcow2 -b rbd:rbd/gold@base -F raw \
	"$S/g/c1.qcow2"
ctl_ok "$G" "open c1 qcow2:$S/g/c1.qcow2"
check_match "c1 chain: qcow2 -> rbd" \
	"^c1 running qcow2 $((8 * MiB)) rw qcow2:$S/g/c1\\.qcow2 -> rbd:rbd/gold@base$" \
	"$(ctl_line "$G" c1)"
check cmp "$G/c1" "$T/gold.raw"
check dd if=/dev/urandom of="$G/c1" bs=4k count=5 seek=3 oflag=direct \
	conv=notrunc status=none
check dd if=/dev/urandom of="$G/c1" bs=64k count=3 seek=70 oflag=direct \
	conv=notrunc status=none
ctl_ok "$G" "flush c1"
check qemu-img convert -U -f qcow2 -O raw "$S/g/c1.qcow2" "$T/c1.qemu.raw"
check cmp "$G/c1" "$T/c1.qemu.raw"
check_not cmp -s "$G/c1" "$T/gold.raw"
export_to rbd/gold@base "$T/gold.after"
check cmp "$T/gold.raw" "$T/gold.after"
export_to rbd/gold "$T/gold.after"
check cmp "$T/gold.raw" "$T/gold.after"
ctl_close "$G" c1

# qemu_field FILE KEY: KEY of qemu-img info --output=json of FILE.
qemu_field() {
	qemu-img info -U --output=json "$1" | json_field "$2"
}
check "$TAPFS_IMG" create -q -f qcow2 -b rbd:rbd/gold@base "$S/g/c2.qcow2"
for k in format virtual-size backing-filename backing-filename-format; do
	check_eq "tapfs-img's rbd child: qemu-img info $k as of qemu-img's" \
		"$(qemu_field "$S/g/c1.qcow2" "$k")" \
		"$(qemu_field "$S/g/c2.qcow2" "$k")"
done
check qemu-img check -q "$S/g/c2.qcow2"
check qemu-img compare -q -U -f qcow2 -F raw "$S/g/c2.qcow2" "$T/gold.raw"
info=$("$TAPFS_IMG" info "$S/g/c2.qcow2")
check_match "tapfs-img info: the backing file" \
	"backing file: rbd:rbd/gold@base \(format raw\)" "$info"
check_match "tapfs-img info: the chain ends in the rbd snapshot" \
	"chain \(leaf -> base\): $S/g/c2\.qcow2 -> rbd/gold@base$" "$info"
check_eq "tapfs-img info --json: virtual-size" $((8 * MiB)) \
	"$("$TAPFS_IMG" info --json "$S/g/c2.qcow2" | json_field virtual-size)"
check "$TAPFS_IMG" check "$S/g/c2.qcow2"
ctl_ok "$G" "open c2 qcow2:$S/g/c2.qcow2"
check cmp "$G/c2" "$T/gold.raw"
ctl_close "$G" c2
# A size of its own; bad parents.
check "$TAPFS_IMG" create -q -f qcow2 -b rbd:rbd/gold "$S/g/c3.qcow2" 16M
check_eq "tapfs-img child of 16M over an 8M rbd image" $((16 * MiB)) \
	"$(qemu_field "$S/g/c3.qcow2" virtual-size)"
check_out "tapfs-img create -b rbd:rbd/nope@x: refused" 1 \
	"no image rbd/nope" "$TAPFS_IMG" create -f qcow2 \
	-b rbd:rbd/nope@x "$T/c4.qcow2"
check_not test -e "$T/c4.qcow2"
check_out "tapfs-img create -f vhd -b rbd:...: refused" 1 \
	"a vhd image cannot have a remote parent" "$TAPFS_IMG" create \
	-f vhd -b rbd:rbd/gold@base "$T/c5.vhd"
check_not test -e "$T/c5.vhd"

# ---- (c) open ... steal after the holder died ------------------------------------

M2=$T/mnt2
tapfs_start "$M2" "$T/store2" "$OPTS" || summary
PID2=$TAPFS_PID
check mkdir "$M2/h"
check rbd create --size 8M rbd/held
ctl_ok "$M2/h" "open x rbd:rbd/held"
head -c $((2 * MiB)) /dev/urandom >"$T/held.data"
check dd if="$T/held.data" of="$M2/h/x" bs=1M oflag=direct conv=notrunc,fsync \
	status=none
kill -9 "$PID2"
check wait_gone "$PID2" 10
wait "$PID2" 2>/dev/null
check fusermount3 -u "$M2"
TAPFS_PID=$PID1
ctl_err "$G" "open x rbd:rbd/held" EBUSY
ctl_says "$G" "rbd/held is in use: its exclusive lock is held by [0-9.:]+/[0-9]+$"
holder=$(ctl_status "$G" | sed 's/.* held by //')
ctl_ok "$G" "open x rbd:rbd/held steal"
check cmp -n $((2 * MiB)) "$G/x" "$T/held.data"
check_match "the log names the broken lock" \
	"broke the exclusive lock of $holder" "$(cat "$LOG1")"
check_match "the dead holder is blocklisted" "$holder" \
	"$(ceph osd blocklist ls 2>&1)"
check dd if=/dev/urandom of="$G/x" bs=4k count=2 seek=9 oflag=direct \
	conv=notrunc,fsync status=none
same_export "x written after the steal" "$G/x" rbd/held
ctl_err "$G" "open x2 rbd:rbd/held steal" EBUSY
ctl_says "$G" "in use by this tapfs daemon \\(another VBD\\): close that VBD"
ctl_err "$G" "open x2 rbd:rbd/held ro steal" EINVAL
alive "after steal"

# The same with two loops, which share the daemon's cluster connection:
# the holder is still known for this daemon's.  A VBD goes to the loop that
# owns the fewest (y: loop 1); each open is tried twice with a VBD opened
# between, so that one try lands on the loop y is not on (the first, on
# loop 0) and one on y's (the second, the loops even again).
M4=$T/mnt4
tapfs_start "$M4" "$T/store4" "$OPTS,workers=2" || summary
PID4=$TAPFS_PID
check mkdir "$M4/w"
ctl_ok "$M4/w" "create y rbd 8M"
check_eq "two loops: y on loop 1" 1 "$(stat_val "$M4/w" y loop)"
for try in 1 2; do
	ctl_err "$M4/w" "open y2 rbd:rbd/w.y" EBUSY
	ctl_says "$M4/w" "held by .* \(this tapfs daemon: another VBD\)"
	ctl_ok "$M4/w" "create f$try rbd 4M"
done
for try in 1 2; do
	ctl_err "$M4/w" "open y2 rbd:rbd/w.y steal" EBUSY
	ctl_says "$M4/w" "in use by this tapfs daemon \(another VBD\): close that VBD"
	ctl_ok "$M4/w" "create s$try rbd 4M"
done
check dd if=/dev/urandom of="$M4/w/y" bs=4k count=2 oflag=direct \
	conv=notrunc,fsync status=none
alive "two loops: y still writes after the refused steal"
check_eq "two loops, five VBDs: one connection to the cluster" 1 \
	"$(grep -c "rbd: connected to the Ceph cluster" "$TAPFS_LOG")"
tapfs_stop "$PID4" "$M4"
TAPFS_PID=$PID1

# ---- (d) the OSD stopped ------------------------------------------------------------

OSD=$(cat "$CEPH_DIR/run/osd.0.pid")
on_exit "kill -CONT $OSD 2>/dev/null; true"
M3=$T/mnt3
tapfs_start "$M3" "$T/store3" "$OPTS,deadline_ms=5000" || summary
PID3=$TAPFS_PID
G3=$M3/k
check mkdir "$G3"
ctl_ok "$G3" "create o rbd 8M"
fio_bg fio-stall "$G3/o" 8M 500		# 4 s of writes or more
check wait_for 60 writes_above "$G3" o 50
check kill -STOP "$OSD"
sleep 2					# the outage, not a wait for a result
check kill -CONT "$OSD"
bg_wait $FIO 120
fio_check "fio verify across a 2 s OSD stop" "$T/fio-stall.json" "$BG_RC"
check_eq "o.errors after the short stop" 0 "$(stat_val "$G3" o errors)"
check_match "o running" "^o running " "$(ctl_line "$G3" o)"

o_failed() { ctl_line "$G3" o | grep -q '^o failed '; }
check kill -STOP "$OSD"
t_stop=$SECONDS
bg_start stuck dd if=/dev/urandom of="$G3/o" bs=4k count=1 seek=3 \
	oflag=direct conv=notrunc,fsync
STUCK=$BG_PID
check_match "the OSD is stopped" "^T" "$(ps -o stat= -p "$OSD")"
check wait_for 30 o_failed
bg_wait $STUCK 10
check_in "the waiting writer got an error" "$BG_RC" 1
check_match "its error is EIO" "Input/output error" "$(cat "$T/stuck.out")"
check_eq "not before the deadline" 1 $((SECONDS - t_stop >= 5))
check_match ".ctl says why" \
	"^o failed .*\\(deadline_ms 5000\\): the storage does not answer\\)" \
	"$(ctl_line "$G3" o)"
alive "with the OSD stopped"
check kill -CONT "$OSD"
ctl_close "$G3" o
reopened() { [ "$(ctl "$G3" "open o rbd:rbd/k.o")" = OK ]; }
check wait_for 30 reopened
check_match "o running again" "^o running " "$(ctl_line "$G3" o)"
check dd if=/dev/urandom of="$G3/o" bs=4k count=1 seek=3 oflag=direct \
	conv=notrunc,fsync status=none
alive "after the OSD came back"

tapfs_stop "$PID3" "$M3"
tapfs_stop "$PID1" "$M"
msg "cluster start ${CEPH_START_MS} ms, test $((SECONDS - T0)) s"
summary
