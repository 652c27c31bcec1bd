#!/bin/bash
# test-loop-ext4.sh - ext4 on a direct-I/O loop device over a VBD.
#
# losetup --direct-io=on on a VBD file, mkfs.ext4, mount, write files with
# checksums, fstrim (discard through the loop device), umount, fsck -fn
# clean, remount and verify the checksums; then close the VBD and check
# the store image on its own: fsck clean, the same files.
. "$(dirname "$0")/lib.sh"
requires_root
requires python3 losetup mkfs.ext4 fsck.ext4 sha256sum mount umount
requires fstrim

M=$T/mnt
S=$T/store
G=$M/vm
FS=$T/ext4
MiB=1048576

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create xvda raw 256M"

loop_attach "$G/xvda" || summary
LOOP=$LOOP_DEV
check_eq "loop device uses direct I/O" 1 \
	"$(losetup -n -O DIO "$LOOP" | tr -d ' ')"
check_eq "loop device size" $((256 * MiB)) \
	"$(blockdev --getsize64 "$LOOP" 2>&1)"
check_fsop "close while loop-attached -> EBUSY" EBUSY -- \
	write "$G/.ctl" "close xvda"

# mount_fs DEV [OPTS]: mount ext4 on $FS; unmounted at exit if need be.
mount_fs() {
	on_exit "! is_mounted '$FS' || umount '$FS'"
	check mount -t ext4 ${2:+-o "$2"} "$1" "$FS"
}

check mkfs.ext4 -q -F "$LOOP"
mkdir -p "$FS"
mount_fs "$LOOP" || summary

# Files: many small ones, a few large ones, one written with O_DIRECT.
mkdir -p "$FS/small"
for i in $(seq 200); do
	head -c $((RANDOM * 3 + 1)) /dev/urandom >"$FS/small/f$i"
done
for i in 1 2 3; do
	check dd if=/dev/urandom of="$FS/big$i" bs=1M count=24 status=none
done
check dd if=/dev/urandom of="$FS/direct" bs=1M count=16 oflag=direct \
	status=none
head -c $((20 * MiB)) /dev/urandom >"$FS/deleted"
sync
rm -f "$FS/deleted"
(cd "$FS" && find . -type f ! -name 'lost+found' | sort |
	xargs sha256sum) >"$T/sums"
check_eq "files checksummed" 204 "$(wc -l <"$T/sums")"
check fstrim -v "$FS"
check umount "$FS"

check fsck.ext4 -fn "$LOOP"

mount_fs "$LOOP" ro
check bash -c "cd '$FS' && sha256sum --quiet -c '$T/sums'"
check umount "$FS"

# Rewrite a file while mounted rw, fsync through the loop device (FSYNC
# reaches the VBD as a flush), and check again.
mount_fs "$LOOP"
check dd if=/dev/urandom of="$FS/big2" bs=1M count=24 conv=fsync \
	status=none
(cd "$FS" && find . -type f | sort | xargs sha256sum) >"$T/sums"
check umount "$FS"
check fsck.ext4 -fn "$LOOP"
check_eq "xvda.errors" 0 "$(stat_val "$G" xvda errors)"
flushes=$(stat_val "$G" xvda flushes)
check test "${flushes:-0}" -gt 0
discards=$(stat_val "$G" xvda discards)
check test "${discards:-0}" -gt 0

check losetup -d "$LOOP"
ctl_close "$G" xvda

# The image in the store is a clean ext4 holding the same files.
check fsck.ext4 -fn "$S/vm/xvda.raw"
loop_attach "$S/vm/xvda.raw" || summary
mount_fs "$LOOP_DEV" ro
check bash -c "cd '$FS' && sha256sum --quiet -c '$T/sums'"
check umount "$FS"

tapfs_stop
summary
