#!/bin/bash
# test-ctl.sh - groups, VBD life cycle and the .ctl / .stats control files.
#
# mkdir a group; create raw and ram VBDs (size, mode, store file, .ctl
# line); open existing images (raw/aio/sync, ro refuses writes); close;
# rmdir (ENOTEMPTY, then ok); every bad command or name fails its write()
# with the documented errno and leaves "status: error: ENAME: msg" in .ctl;
# namespace operations that are refused; .stats keys and counters.
. "$(dirname "$0")/lib.sh"
requires python3 qemu-img truncate fallocate dd cmp

M=$T/mnt
S=$T/store
G=$M/g1
MiB=1048576

tapfs_start "$M" "$S" "allow_path=$T" || summary

# ---- groups --------------------------------------------------------------

check mkdir "$G"
check test -d "$G"
check_eq ".ctl mode 0600" 600 "$(file_mode "$G/.ctl")"
check_eq ".stats mode 0444" 444 "$(file_mode "$G/.stats")"
check_fsop "mkdir existing group -> EEXIST" EEXIST -- mkdir "$G"
check_fsop "mkdir .x -> EINVAL" EINVAL -- mkdir "$M/.x"
check_fsop "mkdir name with control char -> EINVAL" EINVAL -- \
	mkdir "$M/g"$'\x01'
check_fsop "mkdir name with DEL -> EINVAL" EINVAL -- mkdir "$M/g"$'\x7f'
check_fsop "rmdir unknown group -> ENOENT" ENOENT -- rmdir "$M/nosuch"

# ---- create --------------------------------------------------------------

ctl_ok "$G" "create d0 raw 64M"
check test -f "$G/d0"
check_eq "d0 size" $((64 * MiB)) "$(file_size "$G/d0")"
check_eq "d0 mode 0600" 600 "$(file_mode "$G/d0")"
check_eq "store image $S/g1/d0.raw size" $((64 * MiB)) \
	"$(file_size "$S/g1/d0.raw")"
check_match ".ctl line for d0" \
	"^d0 running raw $((64 * MiB)) rw [a-z0-9]+:$S/g1/d0\\.raw\$" \
	"$(ctl_line "$G" d0)"

ctl_ok "$G" "create r0 ram 1M"
check_eq "r0 size" $MiB "$(file_size "$G/r0")"
check_eq "r0 mode 0600" 600 "$(file_mode "$G/r0")"
check_not test -e "$S/g1/r0.raw"
check_match ".ctl line for r0" "^r0 running ram $MiB rw " \
	"$(ctl_line "$G" r0)"

# Whitespace around the command and size suffixes.
ctl_ok "$G" "   create k0 raw 512K   "
check_eq "512K" 524288 "$(file_size "$G/k0")"
ctl_ok "$G" "create b0 raw 4096"
check_eq "4096 bytes" 4096 "$(file_size "$G/b0")"
ctl_ok "$G" "create g0 raw 2G"
check_eq "2G" 2147483648 "$(file_size "$G/g0")"
ctl_ok "$G" "create t0 raw 1T"
check_eq "1T" 1099511627776 "$(file_size "$G/t0")"
long200=$(printf 'n%.0s' $(seq 200))
ctl_ok "$G" "create $long200 ram 1M"
check test -f "$G/$long200"
# 255 bytes is the longest valid name, for an image in the store too.
mkdir "$M/g255"
long255=$(printf 'L%.0s' $(seq 255))
ctl_ok "$M/g255" "create $long255 raw 1M"
check test -f "$M/g255/$long255"
ctl_ok "$M/g255" "create ${long255%L} ram 1M"

# ---- open existing images ------------------------------------------------

truncate -s 8M "$T/img1.raw"
ctl_ok "$G" "open ext1 raw:$T/img1.raw"
check_eq "ext1 size" $((8 * MiB)) "$(file_size "$G/ext1")"
check_eq "ext1 mode 0600" 600 "$(file_mode "$G/ext1")"
check_match ".ctl line for ext1" \
	"^ext1 running raw $((8 * MiB)) rw [a-z0-9]+:$T/img1\\.raw\$" \
	"$(ctl_line "$G" ext1)"
head -c 65536 /dev/urandom >"$T/pat64k"
check dd if="$T/pat64k" of="$G/ext1" bs=64k seek=3 conv=notrunc,fsync \
	status=none

qemu-img create -q -f raw "$T/img2.raw" 16M
head -c $MiB /dev/urandom >"$T/pat1m"
dd if="$T/pat1m" of="$T/img2.raw" bs=1M seek=2 conv=notrunc status=none
ctl_ok "$G" "open ext2 raw:$T/img2.raw ro"
check_eq "ext2 (ro) size" $((16 * MiB)) "$(file_size "$G/ext2")"
check_eq "ext2 (ro) mode 0400" 400 "$(file_mode "$G/ext2")"
check_match ".ctl line for ext2 says ro" \
	"^ext2 running raw $((16 * MiB)) ro [a-z0-9]+:$T/img2\\.raw\$" \
	"$(ctl_line "$G" ext2)"
check_fsop "open ro VBD O_WRONLY refused" EACCES EROFS EPERM -- \
	open "$G/ext2" w
check_fsop "open ro VBD O_RDWR refused" EACCES EROFS EPERM -- \
	open "$G/ext2" rw
check_fsop "open ro VBD O_RDONLY ok" OK -- open "$G/ext2" r
check cmp -n $MiB "$T/pat1m" <(dd if="$G/ext2" bs=1M skip=2 count=1 \
	status=none)

truncate -s 4M "$T/img3.raw" "$T/img4.raw" "$T/img5.raw"
ctl_ok "$G" "open ext3 aio:$T/img3.raw"
ctl_ok "$G" "open ext4 sync:$T/img4.raw"
for v in ext3 ext4; do
	check dd if="$T/pat64k" of="$G/$v" bs=4k seek=5 conv=notrunc,fsync \
		status=none
	check cmp "$T/pat64k" <(dd if="$G/$v" bs=4k skip=5 count=16 \
		status=none)
done

# ---- bad commands --------------------------------------------------------

for cmd in "frobnicate" "frobnicate d0" "" "create" "create x" \
	"create x raw" "create x raw 1M extra" "open" "open x" \
	"open x raw" "close" "close d0 extra" "pause d0 extra" \
	"resume d0 extra" "flush d0 extra"; do
	ctl_err "$G" "$cmd" EINVAL
done
for size in 0 1000 -1 12Q 1.5G M 1M5 513 " 99999999999999999999" \
	99999999999T; do
	ctl_err "$G" "create x raw $size" EINVAL
done
ctl_err "$G" "create x bogus 1M" EINVAL
# The message names what was wrong.
ctl "$G" "create x raw 12Q" >/dev/null
check_match "message names the bad size" "12Q" "$(ctl_status "$G")"
ctl "$G" "frobnicate now" >/dev/null
check_match "message names the bad command" "frobnicate" "$(ctl_status "$G")"
ctl "$G" "create x qcow9 1M" >/dev/null
check_match "message names the bad format" "qcow9" "$(ctl_status "$G")"
ctl_err "$G" "open x bogus:$T/img1.raw" EINVAL
ctl_err "$G" "open x raw:img1.raw" EINVAL
ctl_err "$G" "open x raw:" EINVAL
ctl_err "$G" "open x raw:$T/img5.raw rx" EINVAL
ctl_err "$G" "open x raw:$T/missing.raw" ENOENT
check_match "message names the missing file" "$T/missing\\.raw" \
	"$(ctl_status "$G")"
long256=$(printf 'a%.0s' $(seq 256))
for name in .x . .. a/b $'a\x01b' $'a\x7fb' $'\x1b[1m' "$long256"; do
	ctl_err "$G" "create $name raw 1M" EINVAL
	ctl_err "$G" "open $name raw:$T/img5.raw" EINVAL
done
check_eq "no VBD left behind by bad commands" \
	"b0 d0 ext1 ext2 ext3 ext4 g0 k0 $long200 r0 t0" \
	"$(ls "$G" | sort | tr '\n' ' ' | sed 's/ $//')"
ls "$S/g1" >"$T/store-ls"
check_not grep -Eq '^(x|\.x|a)' "$T/store-ls"

for v in "close nosuch" "pause nosuch" "resume nosuch" "flush nosuch"; do
	ctl_err "$G" "$v" ENOENT
done

# Duplicates: the VBD name, then the image file left in the store.
ctl_err "$G" "create d0 raw 1M" EEXIST
ctl_err "$G" "create r0 ram 1M" EEXIST
ctl_err "$G" "open d0 raw:$T/img5.raw" EEXIST
check_eq "d0 size unchanged" $((64 * MiB)) "$(file_size "$G/d0")"

# A good command after errors resets the status.
ctl_ok "$G" "flush"

# ---- close ---------------------------------------------------------------

check dd if="$T/pat1m" of="$G/d0" bs=64k seek=16 conv=notrunc,fsync \
	status=none
exec 3<>"$G/d0"
ctl_err "$G" "close d0" EBUSY
check_match "d0 still listed after EBUSY" "^d0 running " \
	"$(ctl_line "$G" d0)"
exec 3>&-
ctl_close "$G" d0
check_not test -e "$G/d0"
check_eq "d0 not in .ctl after close" "" "$(ctl_line "$G" d0)"
check cmp -n $MiB "$T/pat1m" "$S/g1/d0.raw" 0 $MiB
ctl_err "$G" "create d0 raw 64M" EEXIST
check_eq "existing d0.raw untouched by refused create" $((64 * MiB)) \
	"$(file_size "$S/g1/d0.raw")"
ctl_ok "$G" "open d0 raw:$S/g1/d0.raw"
check cmp -n $MiB "$T/pat1m" "$G/d0" 0 $MiB

ctl_close "$G" ext1
check_not test -e "$G/ext1"
check test -f "$T/img1.raw"
check cmp -n 65536 "$T/pat64k" "$T/img1.raw" 0 $((3 * 65536))

# ---- namespace rules -----------------------------------------------------

check dd if="$T/pat64k" of="$G/b0" bs=4096 count=1 conv=notrunc,fsync \
	status=none
check_fsop "create regular file in group -> EPERM" EPERM -- \
	open "$G/newfile" wc
check_fsop "create regular file at root -> EPERM" EPERM -- \
	open "$M/newfile" wc
check_fsop "mknod -> EPERM" EPERM -- mknod "$G/fifo"
check_fsop "symlink -> EPERM" EPERM -- symlink d0 "$G/sym"
check_fsop "rename VBD -> EPERM" EPERM -- rename "$G/b0" "$G/b1"
check_fsop "unlink VBD -> EPERM" EPERM -- unlink "$G/b0"
check_fsop "truncate to another size -> EINVAL" EINVAL -- \
	truncate "$G/b0" 8192
check_fsop "truncate to the same size -> ok" OK -- truncate "$G/b0" 4096
check_fsop "O_TRUNC is ignored" OK -- open "$G/b0" wt
check_eq "b0 size after O_TRUNC" 4096 "$(file_size "$G/b0")"
check cmp -n 4096 "$T/pat64k" "$G/b0"

# ---- .stats --------------------------------------------------------------

ctl_ok "$G" "create s0 raw 8M"
keys="state size reads writes read_bytes write_bytes flushes discards
inflight queued errors retries read_lat_us write_lat_us max_lat_us
queue_lat_us io_lat_us reply_lat_us total_lat_us"
for v in s0 r0; do
	missing=
	for k in $keys; do
		val=$(stat_val "$G" "$v" "$k")
		[ -n "$val" ] || missing="$missing $k"
	done
	check_eq ".stats has every key for $v" "" "$missing"
done
check_eq "s0.state" running "$(stat_val "$G" s0 state)"
check_eq "s0.size" $((8 * MiB)) "$(stat_val "$G" s0 size)"
check_eq "s0.inflight at rest" 0 "$(stat_val "$G" s0 inflight)"

w0=$(stat_val "$G" s0 writes)
wb0=$(stat_val "$G" s0 write_bytes)
r0=$(stat_val "$G" s0 reads)
rb0=$(stat_val "$G" s0 read_bytes)
f0=$(stat_val "$G" s0 flushes)
d0=$(stat_val "$G" s0 discards)
check dd if="$T/pat1m" of="$G/s0" bs=64k oflag=direct conv=notrunc \
	status=none
check dd if="$G/s0" of=/dev/null bs=64k count=16 iflag=direct status=none
check_fsop "fsync s0" OK -- fsync "$G/s0"
check fallocate --punch-hole --offset 0 --length 65536 "$G/s0"
w1=$(stat_val "$G" s0 writes)
wb1=$(stat_val "$G" s0 write_bytes)
r1=$(stat_val "$G" s0 reads)
rb1=$(stat_val "$G" s0 read_bytes)
f1=$(stat_val "$G" s0 flushes)
d1=$(stat_val "$G" s0 discards)
check test "${w1:-0}" -gt "${w0:-0}"
check test "${wb1:-0}" -ge $((${wb0:-0} + MiB))
check test "${r1:-0}" -gt "${r0:-0}"
check test "${rb1:-0}" -ge $((${rb0:-0} + MiB))
check test "${f1:-0}" -gt "${f0:-0}"
check test "${d1:-0}" -gt "${d0:-0}"
check_eq "s0.errors" 0 "$(stat_val "$G" s0 errors)"
check_match "s0.write_lat_us is a number" '^[0-9]+$' \
	"$(stat_val "$G" s0 write_lat_us)"
ctl_close "$G" s0
check_eq "s0 gone from .stats" "" "$(stat_val "$G" s0 state)"

# ---- rmdir ---------------------------------------------------------------

check_fsop "rmdir group with VBDs -> ENOTEMPTY" ENOTEMPTY -- rmdir "$G"
for v in b0 d0 ext2 ext3 ext4 g0 k0 "$long200" r0 t0; do
	ctl_close "$G" "$v"
done
check_fsop "rmdir empty group" OK -- rmdir "$G"
for v in "$long255" "${long255%L}"; do
	[ ! -e "$M/g255/$v" ] || ctl_close "$M/g255" "$v"
done
check_fsop "rmdir g255" OK -- rmdir "$M/g255"
check_not test -e "$G"
check test -f "$T/img2.raw"
check cmp -n $MiB "$T/pat1m" "$T/img2.raw" 0 $((2 * MiB))

tapfs_stop
summary
