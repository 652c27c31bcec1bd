#!/bin/bash
# test-rbd.sh - the rbd driver on a real one-node Ceph cluster.
#
# A cluster (tests/ceph, via ceph-lib.sh) is started in /dev/shm; if it
# cannot start the test fails with the reason.  Then:
# (a) "create NAME rbd SIZE" makes image GROUP.NAME in the pool of
#     -o ceph_pool; fio --verify=crc32c at QD32 through the VBD file; after
#     the .ctl flush (which must reach rbd_aio_flush: librbd's cache is
#     writeback) "rbd export" of the image equals the VBD byte for byte;
#     an image made by "rbd create" (and one in a namespace) opens with
#     "open NAME rbd:POOL[/NAMESPACE]/IMAGE", and what is written through
#     it at odd places is what rbd export reads.
# (b) One writer: the same image opened read-write again, by this daemon
#     or by a second daemon on another store (standing for another host),
#     is refused EBUSY with the lock's holder named; read-only it opens.
# (c) Bad targets refused with the reason in .ctl, the daemon alive: no
#     such pool, no such image, malformed names, no such snapshot, QEMU's
#     options other than :conf= and :id=, create over an existing image.
# Snapshots, rbd parents, steal and a stopped OSD: test-rbd-snap.sh.
# (d) Remount: the rbd VBDs come back from the manifest, same data; after
#     the first daemon closes and unmounts, the second opens the image
#     read-write (the lock was released).
# (e) QEMU on the same image (qemu-storage-daemon's rbd driver, FUSE
#     export): once QEMU has written, both daemons' read-write opens are
#     refused naming QEMU's client; read-only shares.  The other way: with
#     tapfs holding an image, qemu-storage-daemon starts and reads, but its
#     writes and flushes fail EROFS, and rbd export still equals what tapfs
#     wrote; once tapfs closes, QEMU writes and tapfs is refused again.
# (f) A VBD's own cluster settings, QEMU's rbd:POOL/IMAGE:conf=FILE:id=NAME:
#     a second client (client.h2, allowed namespace ns2 only) with its own
#     conf and keyring; the conf is judged by the path policy (outside
#     the store and allow_path: EACCES); one connection per (conf, id),
#     shared by its VBDs and shut down with the last; the lock holder is
#     known as this daemon's whichever connection holds it; a remount
#     brings the VBD back on its own cluster settings.
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/ceph-lib.sh"
requires fio cmp python3

M=$T/mnt
S=$T/store
G=$M/g
M2=$T/mnt2
S2=$T/store2
G2=$M2/h
MiB=1048576
T0=$SECONDS

ceph_start
OPTS=$CEPH_OPTS

tapfs_start "$M" "$S" "$OPTS" || summary
PID1=$TAPFS_PID
check mkdir "$G"

# ---- (a) create, fio, export ----------------------------------------------

ctl_ok "$G" "create d1 rbd 64M"
check rbd info rbd/g.d1
check_eq "d1 size" $((64 * MiB)) "$(file_size "$G/d1")"
check_match "d1 chain line" "^d1 running rbd $((64 * MiB)) rw rbd:rbd/g.d1$" \
	"$(ctl_line "$G" d1)"
fio_verify fio-rbd-qd32 120 --filename="$G/d1" --ioengine=libaio \
	--direct=1 --rw=randwrite --bssplit=4k/40:16k/20:64k/20:256k/20 \
	--size=64M --iodepth=32 --verify=crc32c --verify_fatal=1 \
	--verify_state_save=0 --do_verify=1 --randrepeat=0
check_eq "d1.errors after fio" 0 "$(stat_val "$G" d1 errors)"
ctl_ok "$G" "flush d1"
check_eq "d1.flushes counted" 1 "$(($(stat_val "$G" d1 flushes) > 0))"
same_export "d1 equals rbd export rbd/g.d1" "$G/d1" rbd/g.d1

check rbd create --size 32M rbd/ext
ctl_ok "$G" "open e1 rbd:rbd/ext"
check_fsop "e1 pwrite of 9 bytes at 1 MiB + 100" 9 -- \
	pwrite "$G/e1" $((MiB + 100)) 746170667320726264
check dd if=/dev/urandom of="$G/e1" bs=64k count=8 seek=100 \
	oflag=direct conv=notrunc status=none
ctl_ok "$G" "flush e1"
same_export "e1 equals rbd export rbd/ext" "$G/e1" rbd/ext

check rbd namespace create rbd/ns1
check rbd create --size 8M rbd/ns1/img
ctl_ok "$G" "open n1 rbd:rbd/ns1/img"
check dd if=/dev/urandom of="$G/n1" bs=4k count=3 seek=7 oflag=direct \
	conv=notrunc status=none
ctl_ok "$G" "flush n1"
same_export "n1 equals rbd export rbd/ns1/img" "$G/n1" rbd/ns1/img
# A discard of 64 KiB reads back as zeros (rbd_skip_partial_discard off).
check fallocate -p -o $((100 * 65536)) -l 65536 "$G/e1"
check_eq "e1 discarded range reads zeros" \
	"$(head -c 65536 /dev/zero | md5sum)" \
	"$(dd if="$G/e1" bs=64k skip=100 count=1 iflag=direct status=none |
		md5sum)"

# ---- (b) one writer ----------------------------------------------------------

ctl_err "$G" "open d1b rbd:rbd/g.d1" EBUSY
ctl_says "$G" "rbd/g\.d1 is in use: its exclusive lock is held by .*this tapfs daemon"
ctl_ok "$G" "open d1r rbd:rbd/g.d1 ro"
check cmp "$G/d1" "$G/d1r"
ctl_close "$G" d1r

tapfs_start "$M2" "$S2" "$OPTS" || summary
PID2=$TAPFS_PID
check mkdir "$G2"
ctl_err "$G2" "open d1 rbd:rbd/g.d1" EBUSY
ctl_says "$G2" "rbd/g\.d1 is in use: its exclusive lock is held by [^ ]*[0-9]"
msg "holder as named: $(ctl_status "$G2")"
check_not grep -q "this tapfs daemon" <(ctl_status "$G2")
ctl_ok "$G2" "open d1 rbd:rbd/g.d1 ro"
check cmp "$G/d1" "$G2/d1"
check_fsop "read-only VBD refuses writes" EROFS EACCES EPERM -- \
	pwrite "$G2/d1" 0 78
ctl_close "$G2" d1

# ---- (c) bad targets -----------------------------------------------------------

ctl_err "$G" "open x rbd:nopool/img" ENOENT
ctl_says "$G" "no pool 'nopool'"
ctl_err "$G" "open x rbd:rbd/missing" ENOENT
ctl_says "$G" "no image rbd/missing"
ctl_err "$G" "open x rbd:rbd/nons/img" ENOENT
ctl_says "$G" "no image rbd/nons/img"
ctl_err "$G" "open x rbd:rbdonly" EINVAL
ctl_says "$G" "'rbdonly' is not POOL/IMAGE"
ctl_err "$G" "open x rbd:a/b/c/d" EINVAL
ctl_says "$G" "more than three parts"
ctl_err "$G" "open x rbd:/img" EINVAL
ctl_says "$G" "empty pool name"
ctl_err "$G" "open x rbd:rbd/" EINVAL
ctl_says "$G" "empty image name"
ctl_err "$G" "open x rbd:rbd/ext@s1 ro" ENOENT
ctl_says "$G" "no snapshot 's1' of image rbd/ext"
ctl_err "$G" "open x rbd:rbd/ext:keyring=/etc/shadow" EINVAL
ctl_says "$G" "option 'keyring=/etc/shadow' is not taken"
ctl_err "$G" "open x rbd:rbd/ext:conf=ceph.conf" EINVAL
ctl_says "$G" "conf=ceph.conf is not an absolute path"
ctl_err "$G" "create d1 rbd 64M" EEXIST
check mkdir "$M/g2"
check_not test -e "$M/g2/d1"
# A create whose image exists already (made by someone else).
check rbd create --size 8M rbd/g2.taken
ctl_err "$M/g2" "create taken rbd 8M" EEXIST
ctl_says "$M/g2" "image rbd/g2.taken already exists"
alive "after bad targets"

# ---- (d) remount, then the lock moves -------------------------------------------

md5_d1=$(md5sum <"$G/d1")
TAPFS_PID=$PID1
TAPFS_MNT=$M
tapfs_stop "$PID1" "$M"
tapfs_start "$M" "$S" "$OPTS" || summary
PID1=$TAPFS_PID
check_match "d1 back after remount" "^d1 running rbd $((64 * MiB)) rw rbd:rbd/g.d1$" \
	"$(ctl_line "$G" d1)"
check_match "n1 back after remount" "^n1 running rbd .* rbd:rbd/ns1/img$" \
	"$(ctl_line "$G" n1)"
check_eq "d1 same data after remount" "$md5_d1" "$(md5sum <"$G/d1")"
ctl_err "$G2" "open d1 rbd:rbd/g.d1" EBUSY
ctl_close "$G" d1
ctl_ok "$G2" "open d1 rbd:rbd/g.d1"
check dd if=/dev/urandom of="$G2/d1" bs=4k count=1 seek=5 oflag=direct \
	conv=notrunc status=none
ctl_ok "$G2" "flush d1"
same_export "d1 written by the second daemon" "$G2/d1" rbd/g.d1
ctl_err "$G" "open d1 rbd:rbd/g.d1" EBUSY

# ---- (e) QEMU on the same image ---------------------------------------------------

# rbd_holder IMAGE: the address of the client holding IMAGE's exclusive lock.
rbd_holder() {
	rbd lock ls "$1" 2>/dev/null | awk '$1 ~ /^client\./ { print $NF }'
}

check rbd create --size 16M rbd/qemu1
if qsd_export rbd/qemu1 "$T/qemu1.img"; then
	QSD1=$QSD_PID
	check_eq "qemu opened rbd/qemu1: no lock before its first write" "" \
		"$(rbd_holder rbd/qemu1)"
	check dd if=/dev/urandom of="$T/qemu1.img" bs=64k count=4 seek=3 \
		oflag=direct conv=notrunc status=none
	holder=$(rbd_holder rbd/qemu1)
	check_match "qemu's write took the lock" "^[0-9.:]+/[0-9]+$" "$holder"
	ctl_err "$G" "open q1 rbd:rbd/qemu1" EBUSY
	ctl_says "$G" "rbd/qemu1 is in use: its exclusive lock is held by $holder\$"
	ctl_err "$G2" "open q1 rbd:rbd/qemu1" EBUSY
	ctl_says "$G2" "held by $holder"
	check_eq "qemu still holds rbd/qemu1" "$holder" "$(rbd_holder rbd/qemu1)"
	ctl_ok "$G" "open q1r rbd:rbd/qemu1 ro"
	check cmp "$G/q1r" "$T/qemu1.img"
	ctl_close "$G" q1r
	qsd_stop "$QSD1" "$T/qemu1.img"
	ctl_ok "$G" "open q1 rbd:rbd/qemu1"
	ctl_close "$G" q1
fi

check rbd create --size 16M rbd/qemu2
ctl_ok "$G" "open q2 rbd:rbd/qemu2"
check dd if=/dev/urandom of="$G/q2" bs=64k count=16 seek=2 oflag=direct \
	conv=notrunc status=none
ctl_ok "$G" "flush q2"
holder=$(rbd_holder rbd/qemu2)
check_match "tapfs holds rbd/qemu2" "^[0-9.:]+/[0-9]+$" "$holder"
if qsd_export rbd/qemu2 "$T/qemu2.img"; then
	QSD2=$QSD_PID
	check cmp "$G/q2" "$T/qemu2.img"
	check_fsop "qemu's write while tapfs holds rbd/qemu2" EROFS -- \
		pwrite "$T/qemu2.img" $((2 * 65536)) 0000000000000000
	check_fsop "qemu's flush while tapfs holds rbd/qemu2" EROFS -- \
		fsync "$T/qemu2.img"
	check_match "qemu logged librbd's refusal" "Read-only file system" \
		"$(cat "$T/qsd.qemu2.out")"
	check pid_alive "$QSD2"
	same_export "rbd/qemu2 is what tapfs wrote" "$G/q2" rbd/qemu2
	check_eq "tapfs still holds rbd/qemu2" "$holder" \
		"$(rbd_holder rbd/qemu2)"
	ctl_close "$G" q2
	# Nobody holds it now: QEMU's next write takes the lock.
	check_fsop "qemu writes once tapfs closed" 8 -- \
		pwrite "$T/qemu2.img" $((2 * 65536)) 0102030405060708
	holder=$(rbd_holder rbd/qemu2)
	check_match "qemu holds rbd/qemu2 now" "^[0-9.:]+/[0-9]+$" "$holder"
	ctl_err "$G" "open q2 rbd:rbd/qemu2" EBUSY
	ctl_says "$G" "held by $holder"
	qsd_stop "$QSD2" "$T/qemu2.img"
	export_to rbd/qemu2 "$T/qemu2.raw" &&
		check_eq "qemu's write is in the image" 0102030405060708 \
		"$(fsop pread "$T/qemu2.raw" $((2 * 65536)) 8)"
fi

# ---- (f) a VBD's own cluster settings ----------------------------------------------

C2=$S/ceph-h2		# in the store: the path policy allows it
check mkdir "$C2"
check ceph auth get-or-create client.h2 mon "profile rbd" \
	osd "profile rbd pool=rbd namespace=ns2" -o "$C2/keyring"
sed "s|^keyring = .*/keyring\$|keyring = $C2/keyring|" "$CEPH_CONF" \
	>"$C2/ceph.conf"
check_not cmp -s "$CEPH_CONF" "$C2/ceph.conf"
check rbd namespace create rbd/ns2
check rbd create --size 8M rbd/ns2/h2
check rbd create --size 8M rbd/ns2/h2b
cp "$C2/ceph.conf" "$T/outside.conf"
ctl_err "$G" "open h2 rbd:rbd/ns2/h2:conf=$T/outside.conf:id=h2" EACCES
ctl_says "$G" "Ceph configuration .*outside.conf"
ctl_err "$G" "open h2 rbd:rbd/ns2/h2:id=h2" EACCES	# no key in admin's
ctl_says "$G" "client.h2"
# h2_log WHAT: how often the daemon's log says it WHAT (connected to,
# disconnecting from) the Ceph cluster of client.h2.
h2_log() {
	grep -c "$1 the Ceph cluster of $C2/ceph.conf .*client.h2" "$TAPFS_LOG"
}
# client.h2 may use ns2 only: its id is the one used.  Its connection
# goes with the failed open.
ctl_err "$G" "open h2 rbd:rbd/g.d1:conf=$C2/ceph.conf:id=h2" EPERM
check_eq "client.h2 connected once, for the refused open" 1 \
	"$(h2_log "connected to")"
check_eq "and disconnected with it" 1 "$(h2_log "disconnecting from")"
ctl_ok "$G" "open h2 rbd:rbd/ns2/h2:conf=$C2/ceph.conf:id=h2"
ctl_ok "$G" "open h2b rbd:rbd/ns2/h2b:id=h2:conf=$C2/ceph.conf"
check_match "h2 chain line names its cluster" \
	"^h2 running rbd .* rw rbd:rbd/ns2/h2:conf=$C2/ceph.conf:id=h2$" \
	"$(ctl_line "$G" h2)"
# (With -o workers=N too: the loops share the daemon's connections.)
check_eq "one connection for client.h2's two VBDs" 2 \
	"$(h2_log "connected to")"
check dd if=/dev/urandom of="$G/h2" bs=4k count=5 seek=3 oflag=direct \
	conv=notrunc status=none
ctl_ok "$G" "flush h2"
same_export "h2 equals rbd export rbd/ns2/h2" "$G/h2" rbd/ns2/h2
# The lock client.h2 holds is this daemon's, through the mount's client too.
ctl_err "$G" "open h2x rbd:rbd/ns2/h2" EBUSY
ctl_says "$G" "this tapfs daemon"
md5_h2=$(md5sum <"$G/h2")
ctl_close "$G" h2b
check_eq "kept while h2 is open" 1 \
	"$(h2_log "disconnecting from")"
tapfs_stop "$PID1" "$M"
tapfs_start "$M" "$S" "$OPTS" || summary
PID1=$TAPFS_PID
check_match "h2 back after remount, on its cluster" \
	"^h2 running rbd .* rbd:rbd/ns2/h2:conf=$C2/ceph.conf:id=h2$" \
	"$(ctl_line "$G" h2)"
check_eq "h2 same data after remount" "$md5_h2" "$(md5sum <"$G/h2")"
ctl_close "$G" h2
check_eq "shut down with its last VBD" 1 "$(h2_log "disconnecting from")"
check_eq "no lock left on rbd/ns2/h2" "" "$(rbd_holder rbd/ns2/h2)"
alive "at the end"

tapfs_stop "$PID1" "$M"
tapfs_stop "$PID2" "$M2"
msg "cluster start ${CEPH_START_MS} ms, test $((SECONDS - T0)) s"
summary
