#!/bin/bash
# test-vhd.sh - the vhd driver against qemu-img ("vpc"), the outside oracle.
#
# (a) tapfs reads what qemu wrote: dynamic and fixed images made by
#     qemu-img create and filled by qemu-io at scattered offsets (across a
#     2 MiB block boundary, inside a block, 512-aligned but not 4k-aligned,
#     the first and the last sector, zeros written into a fresh block),
#     opened with "open NAME vhd:PATH": the VBD has qemu's virtual size and
#     reads byte-identical to "qemu-img convert -O raw", whole and in random
#     unaligned pieces.
# (b) qemu reads what tapfs wrote: a python writer (random offsets and
#     lengths, partial sectors, block-crossing writes, megabyte writes)
#     into a fresh "create NAME vhd SIZE" VBD and into the two qemu-made
#     images, with a model file of what every byte should hold; reads
#     through tapfs equal the model; after flush and close, qemu-img convert
#     equals the model, and tapfs reopening the image reads it the same.
#     fio --verify writes through another VBD; after close, fio
#     --verify_only checks qemu-img's conversion of the image.  Discard on
#     a dynamic VHD is refused (EOPNOTSUPP) and changes nothing; on a
#     fixed VHD it reads back zeros (and qemu agrees).
#     tapfs-img check is clean on every image (when tapfs-img is built).
# (c) ext4 on a direct-I/O loop device over a vhd VBD: mkfs, files with
#     checksums, fsck -fn clean, remount and verify; the closed image,
#     converted by qemu-img, is a clean ext4 with the same files.
# (d) fio --verify=crc32c, 4k random writes at QD32, on a fresh dynamic
#     VHD (every write allocates or lands next to an allocation).
#
# QEMU does not follow VHD parent chains: chains are test-snapshot.sh's.
. "$(dirname "$0")/lib.sh"
requires_root
requires qemu-img qemu-io fio python3 cmp losetup mkfs.ext4 fsck.ext4 \
	sha256sum mount umount

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
FS=$T/ext4
MiB=1048576
mkdir -p "$I" "$FS"

# ---- helpers ------------------------------------------------------------

# vhdio write VBD MODEL SEED N | reads A B SEED N: N seeded random
# writes applied to a VBD and its model; N random unaligned reads of two
# files agree (pylib/randio.py).
vhdio() {
	case $1 in
	write) shift; pylib randio write vhd "$@" ;;
	*) pylib randio "$@" ;;
	esac
}

# qemu_raw VHD RAW: qemu-img's reading of VHD (one image, no parent).
qemu_raw() {
	rm -f "$2"
	qemu-img convert -f vpc -O raw "$1" "$2"
}

qemu_vsize() {
	qemu-img info -f vpc --output=json "$1" | json_field virtual-size
}

# qio FILE CMD...: one qemu-io run (format vpc), each CMD a -c.
qio() { qemu_io vpc "$@"; }

# img_check FILE: tapfs-img check is clean, when tapfs-img is built.
if [ -x "$TAPFS_IMG" ]; then
	img_check() { check "$TAPFS_IMG" check "$1"; }
else
	msg "tapfs-img not built ($TAPFS_IMG): 'tapfs-img check' skipped"
	img_check() { echo "skip - tapfs-img check $1 (tapfs-img not built)"; }
fi

# verify_only NAME FILE BYTES FIO_ARGS...: fio replays the job without
# writing and checks every block of FILE; BYTES must be read.
verify_only() {
	local name=$1 file=$2 bytes=$3 rc res
	shift 3
	timeout -k 5 60 fio --name="$name" --filename="$file" --verify_only \
		--output-format=json --output="$T/$name.json" "$@" \
		>"$T/$name.err" 2>&1
	rc=$?
	res=$(pylib fiojson get "$T/$name.json" error read.io_bytes 2>&1)
	if [ $rc -eq 0 ] && [ "$res" = "0 $bytes" ]; then
		ok "$name: fio --verify_only of $file ($bytes bytes verified)"
	else
		fail "$name: fio --verify_only of $file" "exit $rc, error and \
bytes read '$res'; $(grep -h -m2 -E 'verify|bad' "$T/$name.err" \
			"$T/$name.json" 2>/dev/null)"
	fi
}

# punch_hole FILE OFF LEN: fallocate(PUNCH_HOLE|KEEP_SIZE); OK or ENAME.
punch_hole() { pylib filegen punch "$@"; }

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- (a) tapfs reads what qemu wrote --------------------------------------

check qemu-img create -q -f vpc -o subformat=dynamic "$I/qdyn.vhd" 64M
check qemu-img create -q -f vpc -o subformat=fixed "$I/qfix.vhd" 200M
DSIZE=$(qemu_vsize "$I/qdyn.vhd")
FSIZE=$(qemu_vsize "$I/qfix.vhd")
msg "qemu virtual sizes: dynamic $DSIZE, fixed $FSIZE (CHS-rounded)"

# Offsets across a 2 MiB block boundary, inside a block, 512- but not
# 4k-aligned, the first and last sectors, zeros into a fresh block, and an
# overwrite of part of an earlier write.
qfill() {
	local f=$1 size=$2
	check qio "$f" \
		"write -P 0x11 0 512" \
		"write -P 0x22 $((2 * MiB - 3 * 512)) $((8 * 1024 + 512))" \
		"write -P 0x33 $((5 * MiB + 1536)) 1536" \
		"write -P 0x44 $((7 * MiB + 512)) $((3 * MiB + 1024))" \
		"write -P 0x55 $((8 * MiB)) 4096" \
		"write -P 0x00 $((13 * MiB)) 65536" \
		"write -P 0x66 $((21 * MiB - 512)) 1024" \
		"write -P 0x77 $((33 * MiB + 4608)) 512" \
		"write -P 0x88 $((40 * MiB)) $((2 * MiB))" \
		"write -P 0x99 $((size - 512)) 512" \
		"write -P 0xaa $((size - 3 * MiB - 2560)) 2560"
}
qfill "$I/qdyn.vhd" "$DSIZE"
qfill "$I/qfix.vhd" "$FSIZE"
check qemu-io -f vpc -c "write -P 0xbb $((150 * MiB + 2560)) 3584" \
	"$I/qfix.vhd"
check qemu_raw "$I/qdyn.vhd" "$T/qdyn.raw"
check qemu_raw "$I/qfix.vhd" "$T/qfix.raw"

ctl_ok "$G" "open qdyn vhd:$I/qdyn.vhd"
ctl_ok "$G" "open qfix vhd:$I/qfix.vhd"
check_eq "qdyn: VBD size is qemu's virtual size" "$DSIZE" \
	"$(file_size "$G/qdyn")"
check_eq "qfix: VBD size is qemu's virtual size" "$FSIZE" \
	"$(file_size "$G/qfix")"
check_eq "qdyn .ctl line" "qdyn running vhd $DSIZE rw vhd:$I/qdyn.vhd" \
	"$(ctl_line "$G" qdyn)"
check_eq "qfix .ctl line" "qfix running vhd $FSIZE rw vhd:$I/qfix.vhd" \
	"$(ctl_line "$G" qfix)"
same_bytes "qdyn: tapfs reads what qemu-img convert reads" \
	"$G/qdyn" "$T/qdyn.raw"
same_bytes "qfix: tapfs reads what qemu-img convert reads" \
	"$G/qfix" "$T/qfix.raw"
check vhdio reads "$G/qdyn" "$T/qdyn.raw" 11 300
check vhdio reads "$G/qfix" "$T/qfix.raw" 12 300
check_eq "dd with O_DIRECT, 1 MiB pieces (qdyn)" \
	"$(md5sum <"$T/qdyn.raw")" \
	"$(dd if="$G/qdyn" bs=1M iflag=direct status=none | md5sum)"

# ---- (b) qemu reads what tapfs wrote --------------------------------------

# A fresh dynamic VHD written by the model writer.
ctl_ok "$G" "create pw vhd 64M"
check_eq "pw .ctl line" "pw running vhd $((64 * MiB)) rw vhd:$S/g/pw.vhd" \
	"$(ctl_line "$G" pw)"
truncate -s 64M "$T/pw.model"
check vhdio write "$G/pw" "$T/pw.model" 21 300
same_bytes "pw: tapfs reads the model" "$G/pw" "$T/pw.model"
check vhdio reads "$G/pw" "$T/pw.model" 22 200

# Discard on a dynamic VHD: refused, and nothing changes.
check_in "pw: punch a hole in a dynamic VHD -> EOPNOTSUPP" \
	"$(punch_hole "$G/pw" $((4 * MiB)) $((2 * MiB)))" EOPNOTSUPP ENOTSUP
same_bytes "pw: unchanged by the refused discard" "$G/pw" "$T/pw.model"

# The qemu-made images, written by tapfs on top of qemu's data.
cp "$T/qdyn.raw" "$T/qdyn.model"
cp "$T/qfix.raw" "$T/qfix.model"
check vhdio write "$G/qdyn" "$T/qdyn.model" 31 200
check vhdio write "$G/qfix" "$T/qfix.model" 32 200
same_bytes "qdyn: tapfs reads the model after its writes" \
	"$G/qdyn" "$T/qdyn.model"
same_bytes "qfix: tapfs reads the model after its writes" \
	"$G/qfix" "$T/qfix.model"
# A fixed disk discards by punching a hole: the range reads zeros.
check_eq "qfix: punch a hole in a fixed VHD" OK \
	"$(punch_hole "$G/qfix" $((7 * MiB)) $((2 * MiB + 4096)))"
check dd if=/dev/zero of="$T/qfix.model" bs=4k seek=$((7 * 256)) \
	count=$((2 * 256 + 1)) conv=notrunc status=none
same_bytes "qfix: the discarded range reads zeros" "$G/qfix" \
	"$T/qfix.model"

# fio through a fresh VBD; its pattern is checked again on qemu's copy.
FIO_B=(--ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-64k
	--iodepth=16 --size=64M --verify=crc32c --randseed=4242)
ctl_ok "$G" "create fw vhd 64M"
fio_verify fw 90 --filename="$G/fw" "${FIO_B[@]}"

ctl_ok "$G" "flush"
for v in pw qdyn qfix fw; do
	ctl_close "$G" "$v"
done

check_eq "pw: qemu-img virtual size" $((64 * MiB)) "$(qemu_vsize "$S/g/pw.vhd")"
check qemu_raw "$S/g/pw.vhd" "$T/pw.q.raw"
same_bytes "pw: qemu-img convert equals the model" \
	"$T/pw.q.raw" "$T/pw.model"
check qemu_raw "$I/qdyn.vhd" "$T/qdyn.q.raw"
same_bytes "qdyn: qemu-img convert equals the model after tapfs wrote" \
	"$T/qdyn.q.raw" "$T/qdyn.model"
check qemu_raw "$I/qfix.vhd" "$T/qfix.q.raw"
same_bytes "qfix: qemu-img convert equals the model after tapfs wrote" \
	"$T/qfix.q.raw" "$T/qfix.model"
check qemu_raw "$S/g/fw.vhd" "$T/fw.q.raw"
verify_only fw-qemu "$T/fw.q.raw" $((64 * MiB)) "${FIO_B[@]}"
check qemu-img compare -q -f vpc -F raw "$I/qdyn.vhd" "$T/qdyn.model"
for f in "$S/g/pw.vhd" "$S/g/fw.vhd" "$I/qdyn.vhd" "$I/qfix.vhd"; do
	img_check "$f"
done

# tapfs reopens what it wrote and reads the same.
ctl_ok "$G" "open pw vhd:$S/g/pw.vhd ro"
same_bytes "pw: reopened read-only, reads the model" "$G/pw" "$T/pw.model"
ctl_close "$G" pw
ctl_ok "$G" "open qdyn vhd:$I/qdyn.vhd"
same_bytes "qdyn: reopened, reads the model" "$G/qdyn" "$T/qdyn.model"
ctl_close "$G" qdyn
rm -f "$T"/*.raw "$T"/*.model

# ---- (c) ext4 on a direct-I/O loop device over a vhd VBD -------------------

ctl_ok "$G" "create xvda vhd 256M"
if loop_attach "$G/xvda"; then
	LOOP=$LOOP_DEV
	check_eq "loop device size" $((256 * MiB)) \
		"$(blockdev --getsize64 "$LOOP" 2>&1)"
	# A dynamic VHD cannot discard: no discard pass at mkfs.
	check mkfs.ext4 -q -F -E nodiscard "$LOOP"
	on_exit "! is_mounted '$FS' || umount '$FS'"
	if check mount -t ext4 "$LOOP" "$FS"; then
		mkdir -p "$FS/small"
		for i in $(seq 150); do
			head -c $((RANDOM * 3 + 1)) /dev/urandom \
				>"$FS/small/f$i"
		done
		check dd if=/dev/urandom of="$FS/big" bs=1M count=40 \
			status=none
		check dd if=/dev/urandom of="$FS/direct" bs=1M count=16 \
			oflag=direct status=none
		head -c $((8 * MiB)) /dev/urandom >"$FS/deleted"
		sync
		rm -f "$FS/deleted"
		(cd "$FS" && find . -type f | sort | xargs sha256sum) \
			>"$T/sums"
		check_eq "files checksummed" 152 "$(wc -l <"$T/sums")"
		check umount "$FS"
	fi
	check fsck.ext4 -fn "$LOOP"
	check mount -t ext4 -o ro "$LOOP" "$FS" &&
		check bash -c "cd '$FS' && sha256sum --quiet -c '$T/sums'"
	is_mounted "$FS" && check umount "$FS"
	check losetup -d "$LOOP"
fi
check_eq "xvda.errors" 0 "$(stat_val "$G" xvda errors)"
ctl_close "$G" xvda
img_check "$S/g/xvda.vhd"
check qemu_raw "$S/g/xvda.vhd" "$T/xvda.raw"
check fsck.ext4 -fn "$T/xvda.raw"
if loop_attach "$T/xvda.raw"; then
	check mount -t ext4 -o ro "$LOOP_DEV" "$FS" &&
		check bash -c "cd '$FS' && sha256sum --quiet -c '$T/sums'"
	is_mounted "$FS" && check umount "$FS"
	check losetup -d "$LOOP_DEV"
fi
rm -f "$T/xvda.raw"

# ---- (d) fio --verify at QD32 on a fresh dynamic VHD ----------------------

ctl_ok "$G" "create qd vhd 256M"
fio_verify qd32 120 --filename="$G/qd" --ioengine=libaio --direct=1 \
	--rw=randwrite --bs=4k --iodepth=32 --size=256M --io_size=64M \
	--verify=crc32c --verify_fatal=1 --randseed=32
check_eq "qd.errors" 0 "$(stat_val "$G" qd errors)"
ctl_close "$G" qd
img_check "$S/g/qd.vhd"

# ---- (e) the parent a differencing VHD was made on --------------------------

# The child names its parent's UUID; the driver reads the parent's from
# the parent's file.  Another image put in the parent's place is refused.
if [ -x "$TAPFS_IMG" ]; then
	check "$TAPFS_IMG" create -q "$I/base.vhd" 8M
	check "$TAPFS_IMG" snapshot "$I/base.vhd" "$I/kid.vhd"
	ctl_ok "$G" "open kid vhd:$I/kid.vhd ro"
	ctl_close "$G" kid
	check "$TAPFS_IMG" create -q "$I/other.vhd" 8M
	check mv "$I/other.vhd" "$I/base.vhd"
	check_eq "kid on another parent: open refused" EINVAL \
		"$(ctl "$G" "open kid vhd:$I/kid.vhd ro")"
	check_match "kid on another parent: .ctl names both UUIDs" \
		"^status: error: EINVAL: parent UUID mismatch: .*kid\.vhd expects parent UUID .* but .*base\.vhd has UUID" \
		"$(ctl_status "$G")"
	check_eq "kid on another parent: no VBD made" "" "$(ctl_line "$G" kid)"
fi

tapfs_stop
summary
