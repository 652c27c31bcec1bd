#!/bin/bash
# test-4kn.sh - a store on a device with 4096-byte logical sectors.
#
# O_DIRECT there needs 4 KiB-aligned offsets and lengths.  A raw VBD
# still presents 512-byte sectors: the daemon widens client requests to
# 4 KiB (reading around, and read-modify-writing what is smaller), so fio
# with 512-byte-granular random writes verifies, sub-sector writes land,
# ext4 on a loop device over the VBD checks clean, and the image equals
# the VBD; an image whose size is not a multiple of 4 KiB is refused.
. "$(dirname "$0")/lib.sh"
requires_root
requires losetup mkfs.ext4 fsck.ext4 fio blockdev cmp qemu-img

M=$T/mnt
FS=$T/fs4k
G=$M/g
mkdir -p "$FS"

check truncate -s 512M "$T/disk"
DEV4K=$(losetup --sector-size 4096 -f --show "$T/disk") || {
	fail "losetup --sector-size 4096"
	summary
}
on_exit "_loop_detach '$DEV4K' '$T/disk'"
check_eq "the device has 4096-byte logical sectors" 4096 \
	"$(blockdev --getss "$DEV4K")"
check mkfs.ext4 -q "$DEV4K"
check mount "$DEV4K" "$FS"
on_exit "umount '$FS' 2>/dev/null || umount -l '$FS'"
S=$FS/store

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create d raw 64M"
fio_verify fio-4kn-512 120 --filename="$G/d" --ioengine=libaio --direct=1 \
	--rw=randwrite --bsrange=512-64k --blockalign=512 --size=64M \
	--iodepth=16 --verify=crc32c --verify_fatal=1 --do_verify=1 \
	--randrepeat=0
check_eq "no request failed" 0 "$(stat_val "$G" d errors)"
check_eq "a sub-sector write" 5 "$(fsop pwrite "$G/d" 700 6869736b61)"
check_eq "reads back" 6869736b61 "$(fsop pread "$G/d" 700 5)"
out=$(fsop pread "$G/d" 1536 512)
check_eq "a 512-byte read at an odd sector (hex digits)" 1024 "${#out}"
ctl_ok "$G" "flush d"
check cmp "$G/d" "$S/g/d.raw"

loop_attach "$G/d"
if [ -n "$LOOP_DEV" ]; then
	check mkfs.ext4 -q "$LOOP_DEV"
	check fsck.ext4 -fn "$LOOP_DEV"
	check losetup -d "$LOOP_DEV"
fi

# VHD: block data at 512-byte offsets: buffered I/O on such a device.
ctl_ok "$G" "create v vhd 16M"
fio_verify fio-4kn-vhd 120 --filename="$G/v" --ioengine=libaio --direct=1 \
	--rw=randwrite --bsrange=512-64k --blockalign=512 --size=16M \
	--iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 \
	--randrepeat=0
ctl_close "$G" v
check "$TAPFS_IMG" check "$S/g/v.vhd"
check_match "the log says why it is buffered" "VHD uses buffered I/O" \
	"$(cat "$TAPFS_LOG")"

# qcow2: clusters are 4 KiB aligned, requests widened as for raw.
ctl_ok "$G" "create q qcow2 16M"
fio_verify fio-4kn-qcow2 120 --filename="$G/q" --ioengine=libaio \
	--direct=1 --rw=randwrite --bsrange=512-64k --blockalign=512 \
	--size=16M --iodepth=8 --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --randrepeat=0
check_eq "q: no request failed" 0 "$(stat_val "$G" q errors)"
ctl_close "$G" q
check qemu-img check -q "$S/g/q.qcow2"

check truncate -s $((16 * 1048576 + 512)) "$S/g/odd.raw"
ctl_err "$G" "open odd raw:$S/g/odd.raw" EINVAL
check_match "says why" "size 16777728 is not a multiple of the 4096-byte" \
	"$(ctl_status "$G")"
alive "at the end"
tapfs_stop
summary
