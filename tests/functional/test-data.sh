#!/bin/bash
# test-data.sh - the data path of a VBD.
#
# fio --verify=crc32c random writes (mixed 4k..128k, libaio, O_DIRECT) at
# queue depths 16 and 32; a byte-exact model of a second VBD kept beside
# it: dd random patterns (direct and buffered, odd block sizes), unaligned
# byte writes with their neighbours checked, writes and reads at and past
# the end, punched holes reading back zeros, fsync; the model is compared
# with the VBD, with the store image (cmp, qemu-img compare) after flush
# and close, and again after reopening.  A ram VBD gets the same basics.
. "$(dirname "$0")/lib.sh"
requires python3 fio dd cmp fallocate qemu-img

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576

tapfs_start "$M" "$S" || summary
check mkdir "$G"

# ---- fio verify at queue depth 16 and 32 ---------------------------------

ctl_ok "$G" "create d raw 256M"
fio_args=(--filename="$G/d" --ioengine=libaio --direct=1 --rw=randwrite
	--bssplit=4k/30:8k/10:16k/15:32k/15:64k/15:128k/15 --size=256M
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1
	--randrepeat=0)
fio_verify fio-randwrite-qd16 90 "${fio_args[@]}" --iodepth=16
fio_verify fio-randwrite-qd32-backlog 90 "${fio_args[@]}" --iodepth=32 \
	--verify_backlog=256 --iodepth_batch_submit=8
check_eq "d.errors after fio" 0 "$(stat_val "$G" d errors)"
check_eq "d.inflight after fio" 0 "$(stat_val "$G" d inflight)"

# ---- a VBD with a model --------------------------------------------------

SIZE=$((64 * MiB))
ctl_ok "$G" "create e raw 64M"
V=$G/e
# A disk's preferred I/O size (cp, cmp read this much at a time).
check_eq "st_blksize of a VBD: 1 MiB" 1048576 "$(stat -c %o "$V")"
MODEL=$T/model
head -c $SIZE /dev/urandom >"$MODEL"

# model_pwrite OFF HEX: the same pwrite on the VBD and on the model.
model_pwrite() {
	local n=$((${#2} / 2))
	fsop pwrite "$MODEL" "$1" "$2" >/dev/null
	check_eq "pwrite $n bytes at $1" $n "$(fsop pwrite "$V" "$1" "$2")"
}

# model_window NAME OFF LEN: bytes OFF..OFF+LEN read back as the model.
model_window() {
	check_eq "$1" "$(fsop pread "$MODEL" "$2" "$3")" \
		"$(fsop pread "$V" "$2" "$3")"
}

# A full random pattern, O_DIRECT, then read back direct and buffered.
check dd if="$MODEL" of="$V" bs=1M oflag=direct conv=notrunc status=none
check cmp "$MODEL" <(dd if="$V" bs=1M iflag=direct status=none)
check cmp "$MODEL" "$V"
check_fsop "fsync after direct writes" OK -- fsync "$V"
check cmp "$MODEL" "$S/g/e.raw"

# Buffered writes with odd block sizes, at odd offsets.
head -c 388850 /dev/urandom >"$T/odd"
for off in 123457 $((5 * MiB + 1)) $((SIZE - 388850)); do
	dd if="$T/odd" of="$MODEL" bs=7777 seek="$off" oflag=seek_bytes \
		conv=notrunc status=none
	check dd if="$T/odd" of="$V" bs=7777 seek="$off" oflag=seek_bytes \
		conv=notrunc,fsync status=none
done
check cmp "$MODEL" "$V"

# Unaligned byte writes: exact bytes land, neighbours are untouched.
model_pwrite 1001 616263
model_window "3 bytes at 1001 and neighbours" 990 30
model_pwrite 4090 00112233445566778899
model_window "10 bytes across a 4k boundary" 4080 32
model_pwrite 65535 ff
model_window "1 byte at 65535" 65520 32
model_pwrite $((SIZE - 1)) 5a
model_window "last byte" $((SIZE - 16)) 16
head -c 1000 /dev/urandom >"$T/k1"
dd if="$T/k1" of="$MODEL" bs=1000 seek=$((3 * MiB - 500)) \
	oflag=seek_bytes conv=notrunc status=none
check dd if="$T/k1" of="$V" bs=1000 seek=$((3 * MiB - 500)) \
	oflag=seek_bytes conv=notrunc status=none
model_window "1000 bytes across a 1M boundary" $((3 * MiB - 600)) 1200

# At and past the end: ENOSPC, no growth; reads stop at the end.
check_fsop "pwrite at the end -> ENOSPC" ENOSPC -- pwrite "$V" $SIZE 00
check_fsop "pwrite 1M past the end -> ENOSPC" ENOSPC -- \
	pwrite "$V" $((SIZE + MiB)) 00
check_fsop "pwrite straddling the end -> short or ENOSPC" 2 ENOSPC -- \
	pwrite "$V" $((SIZE - 2)) a1a2a3a4
model_pwrite $((SIZE - 2)) a1a2
check_eq "size unchanged by writes past the end" $SIZE "$(file_size "$V")"
check_not dd if=/dev/zero of="$V" bs=1M seek=64 count=1 oflag=direct \
	conv=notrunc
check_eq "pread at the end" "" "$(fsop pread "$V" $SIZE 16)"
check_eq "pread past the end" "" "$(fsop pread "$V" $((SIZE + MiB)) 16)"
model_window "pread straddling the end is short" $((SIZE - 2)) 16
check_eq "read of the whole VBD stops at its size" $SIZE \
	"$(dd if="$V" bs=1M iflag=direct status=none | wc -c)"

# Punched holes read back zeros; neighbours keep their data.  A range not
# aligned to 512 bytes may be refused with EINVAL, as a block device does
# (blkdev_fallocate); then nothing may change.
punch() {	# OFF LEN NAME
	local err
	if err=$(fallocate --punch-hole --offset "$1" --length "$2" "$V" 2>&1)
	then
		ok "$3: fallocate --punch-hole --offset $1 --length $2"
		fallocate --punch-hole --offset "$1" --length "$2" "$MODEL"
		check cmp -n "$2" /dev/zero "$V" 0 "$1"
	elif [ $((($1 | $2) % 512)) -ne 0 ] &&
		[[ $err == *"Invalid argument"* ]]; then
		ok "$3: refused with EINVAL (not 512-aligned)"
	else
		fail "$3: fallocate --punch-hole --offset $1 --length $2" "$err"
	fi
	model_window "$3: start and the byte before" $(($1 - 64)) 128
	model_window "$3: end and the byte after" $(($1 + $2 - 64)) 128
}
punch $((8 * MiB + 65536)) 131072 "4k-aligned hole"
punch $((9 * MiB + 512)) 1536 "512-aligned hole"
punch $((10 * MiB + 100)) 5000 "byte-unaligned hole"
punch $((12 * MiB)) $((4 * MiB)) "4M hole"
check_eq "size unchanged by punch-hole" $SIZE "$(file_size "$V")"
check cmp "$MODEL" "$V"

# flush makes it all visible in the store; close keeps it; reopen reads it.
check_fsop "fsync" OK -- fsync "$V"
ctl_ok "$G" "flush e"
check cmp "$MODEL" "$S/g/e.raw"
ctl_close "$G" e
check cmp "$MODEL" "$S/g/e.raw"
check qemu-img compare -q -f raw -F raw "$MODEL" "$S/g/e.raw"
ctl_ok "$G" "open e raw:$S/g/e.raw"
check cmp "$MODEL" "$V"

# ---- ram -----------------------------------------------------------------

ctl_ok "$G" "create r ram 4M"
V=$G/r
MODEL=$T/rmodel
SIZE=$((4 * MiB))
head -c $SIZE /dev/urandom >"$MODEL"
check dd if="$MODEL" of="$V" bs=64k oflag=direct conv=notrunc status=none
check cmp "$MODEL" "$V"
model_pwrite 1001 616263
model_window "ram: 3 bytes at 1001 and neighbours" 990 30
punch 65536 65536 "ram: 64k hole"
punch 200001 999 "ram: byte-unaligned hole"
check_fsop "ram: write at the end -> ENOSPC" ENOSPC -- pwrite "$V" $SIZE 00
check_fsop "ram: fsync" OK -- fsync "$V"
check cmp "$MODEL" "$V"

tapfs_stop
summary
