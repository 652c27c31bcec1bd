#!/bin/bash
# test-vmdk.sh - the vmdk driver against qemu-img, the oracle.
#
# (a) Images qemu-img makes of a raw file with data at odd offsets, in
# every subformat (monolithicSparse, monolithicFlat, twoGbMaxExtentSparse
# and twoGbMaxExtentFlat of more than 2 GiB so that data straddles two
# extents, streamOptimized) read byte for byte like "qemu-img convert -O
# raw" of them: through "tapfs-img convert -O raw" and through a VBD.
# The split ones then written across their extent boundary: "qemu-img
# compare" with a raw file written the same way, "qemu-img check" clean.
# A streamOptimized image opened read-write is refused, saying why.
# (b) Images tapfs writes (a tapfs-img created disk and a qemu-made
# monolithicSparse and monolithicFlat, written through the VBD at odd
# offsets) read back by qemu-img equal to a raw file written the same
# way, and "qemu-img check" finds no error; ".ctl create NAME vmdk SIZE".
# (c) Writes into grain tables missing from the grain directory (never
# allocated, or in the redundant directory only, as a crash leaves
# them) allocate them: random writes and fio verify, then "qemu-img
# check" clean and qemu reads what was written.
# (d) A child disk (parentFileNameHint) reads through its parent and is
# written (the parent's data around the write copied into new grains):
# qemu reads what was written, "qemu-img check" clean, the parent
# unchanged; a raw parent too (qemu reads none).  A parent outside the
# allowed folders is refused; one whose CID is not the child's parentCID
# is refused naming both.
# (e) Bad input refused with the reason in .ctl, the daemon alive: a
# truncated file, a grain directory past the end, an absurd capacity, an
# extent outside the descriptor's folder, an extent that is a FIFO, an
# overlong descriptor line.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# same_raw NAME FILE REF: FILE holds exactly REF's bytes.
same_raw() {
	if cmp -s "$2" "$3"; then
		ok "$1"
	else
		fail "$1" "$(cmp "$2" "$3" 2>&1 | head -n 1)"
	fi
}

# ---- (a) reading what qemu wrote ------------------------------------------

# A small disk, and one past 2 GiB for the split subformats.
for sz in 64 2100; do
	rm -f "$T/src$sz.raw"
	check qemu-img create -q -f raw "$T/src$sz.raw" ${sz}M
	check qemu_io raw "$T/src$sz.raw" "write -P 0x5a 1000 70000" \
		"write -P 0x33 $((33 * MiB + 512)) 3000" \
		"write -P 0x77 $(((sz - 1) * MiB)) $MiB"
done
check qemu_io raw "$T/src2100.raw" "write -P 0x44 $((2048 * MiB - 5000)) 9000"

n=0
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse \
	   twoGbMaxExtentFlat streamOptimized; do
	sz=64
	case $sub in twoGb*) sz=2100 ;; esac
	n=$((n + 1))
	img=$I/$sub.vmdk
	check qemu-img convert -f raw -O vmdk -o subformat=$sub \
		"$T/src$sz.raw" "$img"
	rm -f "$T/ref.raw" "$T/out.raw"
	check qemu-img convert -f vmdk -O raw "$img" "$T/ref.raw"
	same_raw "$sub: qemu reads the source" "$T/ref.raw" "$T/src$sz.raw"
	check "$TAPFS_IMG" convert -O raw "$img" "$T/out.raw"
	same_raw "$sub: tapfs-img convert reads it like qemu" "$T/out.raw" \
		"$T/ref.raw"
	rm -f "$T/out.raw"
	ctl_ok "$G" "open v$n vmdk:$img ro"
	same_raw "$sub: the VBD reads it like qemu" "$G/v$n" "$T/ref.raw"
	ctl_close "$G" "v$n"
done

# The split subformats written across their extent boundary (2048 MiB),
# over qemu's data and into new grains, a sector split between the two
# extents, the end of the disk: the VBD reads it back, qemu reads what
# was written, "qemu-img check" (sparse) and tapfs-img check clean.
head -c 200000 /dev/urandom >"$T/rnd"
B=$((2048 * MiB))
# put FILE OFFSET LEN: LEN bytes of $T/rnd at byte OFFSET of FILE.
put() {
	dd if="$T/rnd" of="$1" bs="$3" count=1 oflag=seek_bytes seek="$2" \
		conv=notrunc status=none
}
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	img=$I/$sub.vmdk
	rm -f "$T/split.model"
	check cp --sparse=always "$T/src2100.raw" "$T/split.model"
	ctl_ok "$G" "open sp vmdk:$img"
	for f in "$G/sp" "$T/split.model"; do
		check put "$f" $((B - 70001)) 150001
		check put "$f" $((B - 1)) 3
		check put "$f" $((B + 5 * MiB + 123)) 1000
		check put "$f" $((2100 * MiB - 700)) 700
	done
	check_eq "$sub: the VBD reads across the boundary" "" \
		"$(cmp -n 400000 -i $((B - 200000)) "$G/sp" "$T/split.model" \
		2>&1)"
	ctl_close "$G" sp
	[ $sub = twoGbMaxExtentFlat ] || check qemu-img check "$img"
	check "$TAPFS_IMG" check "$img"
	check qemu-img compare -f vmdk -F raw "$img" "$T/split.model"
done
rm -f "$T/src2100.raw" "$T/ref.raw" "$T/split.model" "$I"/twoGb*

ctl_err "$G" "open so vmdk:$I/streamOptimized.vmdk" EROFS
check_match "streamOptimized read-write: the reason" \
	"read-only in tapfs" "$(ctl_status "$G")"
check "$TAPFS_IMG" check "$I/streamOptimized.vmdk"

# ---- (b) tapfs writes, qemu reads -------------------------------------------

# write_odd FILE: the same odd writes, to a VBD or to a raw file.
write_odd() {
	printf 'abcdefgh%.0s' $(seq 700) |
		dd of="$1" bs=512 seek=3 conv=notrunc status=none &&
	put "$1" $((40 * MiB + 777)) 200000 &&
	dd if="$T/rnd" of="$1" bs=4096 seek=$((64 * 256 - 3)) count=3 \
		conv=notrunc status=none
}

check "$TAPFS_IMG" create -f vmdk "$I/new.vmdk" 64M
check qemu-img check "$I/new.vmdk"
cp "$I/monolithicSparse.vmdk" "$I/ms.vmdk"
sed 's/monolithicFlat-flat.vmdk/mf-flat.vmdk/' "$I/monolithicFlat.vmdk" \
	>"$I/mf.vmdk"
cp "$I/monolithicFlat-flat.vmdk" "$I/mf-flat.vmdk"
for w in new ms mf; do
	rm -f "$T/want.raw"
	check qemu-img convert -f vmdk -O raw "$I/$w.vmdk" "$T/want.raw"
	check write_odd "$T/want.raw"
	ctl_ok "$G" "open w$w vmdk:$I/$w.vmdk"
	check write_odd "$G/w$w"
	same_raw "$w: the VBD reads what was written" "$G/w$w" "$T/want.raw"
	ctl_close "$G" "w$w"
	check qemu-img compare -f vmdk -F raw "$I/$w.vmdk" "$T/want.raw"
	[ $w = mf ] || check qemu-img check "$I/$w.vmdk"
	check "$TAPFS_IMG" check "$I/$w.vmdk"
done
rm -f "$T/want.raw"

ctl_ok "$G" "create c vmdk 16M"
check dd if="$T/rnd" of="$G/c" bs=4096 count=10 seek=7 conv=notrunc \
	status=none
check_eq "create: reads back" "$(cmp -n 40960 "$T/rnd" <(dd if="$G/c" \
	bs=4096 skip=7 count=10 status=none) && echo same)" same
ctl_close "$G" c

# ---- (c) grain tables allocated by writes -----------------------------------

# 160 MiB: five grain tables of 32 MiB.  qemu writes into tables 1 and
# 4; tables 0 and 2 are then dropped from both grain directories (never
# allocated, as other tools leave them), table 3 from the primary one
# only (a crash between the two directory writes).  Writes through the
# VBD into the first grain, across tables 2 and 3, then at random.
check qemu-img create -q -f vmdk "$I/gt.vmdk" 160M
check qemu_io vmdk "$I/gt.vmdk" \
	"write -P 0x61 $((33 * MiB + 100 * 512)) 5120" \
	"write -P 0x62 $((130 * MiB)) 70000"
check pylib vmdkfile dropgt "$I/gt.vmdk" both 0 2
check pylib vmdkfile dropgt "$I/gt.vmdk" primary 3
# nz FILE [r]: which grain directory entries are set, as 0s and 1s.
nz() {
	pylib vmdkfile gd "$@" |
		awk '{ for (i = 1; i <= NF; i++) printf "%d", $i != 0 }'
}
check_eq "gt: tables 0, 2, 3 not in the grain directory" \
	"$(nz "$I/gt.vmdk") $(nz "$I/gt.vmdk" r)" "01001 01011"
check_out "gt: tapfs-img check calls table 3 a leak" 0 \
	"leak: grain table 3 is in the redundant grain directory only" \
	"$TAPFS_IMG" check "$I/gt.vmdk"
rm -f "$T/gt.model" "$T/gt.raw"
check qemu-img convert -f vmdk -O raw "$I/gt.vmdk" "$T/gt.model"
ctl_ok "$G" "open gt vmdk:$I/gt.vmdk"
for f in "$G/gt" "$T/gt.model"; do
	check dd if="$T/rnd" of="$f" bs=512 count=3 seek=1 conv=notrunc \
		status=none
	check put "$f" $((96 * MiB - 40000)) 100000
done
check pylib randio write vmdk "$G/gt" "$T/gt.model" 41 40
same_raw "gt: the VBD reads what was written" "$G/gt" "$T/gt.model"
ctl_close "$G" gt
check_eq "gt: every table allocated, in both directories" \
	"$(nz "$I/gt.vmdk") $(nz "$I/gt.vmdk" r)" "11111 11111"
check qemu-img check "$I/gt.vmdk"
check_out "gt: tapfs-img check finds nothing" 0 "no errors found$" \
	"$TAPFS_IMG" check "$I/gt.vmdk"
check_eq "gt: no leak left" 0 \
	"$("$TAPFS_IMG" check "$I/gt.vmdk" 2>&1 | grep -c leak)"
check qemu-img convert -f vmdk -O raw "$I/gt.vmdk" "$T/gt.raw"
same_raw "gt: qemu reads what tapfs wrote" "$T/gt.raw" "$T/gt.model"
rm -f "$T/gt.model" "$T/gt.raw"

# Many writes in flight into tables being allocated (they wait for
# them), fio checking every byte; then qemu reads what the VBD reads.
check qemu-img create -q -f vmdk "$I/gtf.vmdk" 160M
check pylib vmdkfile dropgt "$I/gtf.vmdk" both 0 1 2 3 4
ctl_ok "$G" "open gtf vmdk:$I/gtf.vmdk"
fio_verify vmdk-gt-alloc 120 --filename="$G/gtf" --ioengine=libaio \
	--direct=1 --rw=randwrite --bsrange=512-128k --blockalign=512 \
	--size=160M --io_size=12M --iodepth=16 --verify=crc32c \
	--verify_fatal=1 --do_verify=1 --randrepeat=0
check cp --sparse=always "$G/gtf" "$T/gtf.model"
ctl_close "$G" gtf
check_eq "gtf: every table allocated" "$(nz "$I/gtf.vmdk")" 11111
check qemu-img check "$I/gtf.vmdk"
check qemu-img compare -f vmdk -F raw "$I/gtf.vmdk" "$T/gtf.model"
rm -f "$T/gtf.model" "$I/gtf.vmdk"

# ---- (d) a child disk over its parent ----------------------------------------

check qemu-img create -q -f vmdk "$I/base.vmdk" 64M
check qemu_io vmdk "$I/base.vmdk" "write -P 0x21 0 200000" \
	"write -P 0x22 $((10 * MiB + 100 * 512)) 70000"
check qemu-img create -q -f vmdk -b base.vmdk -F vmdk "$I/child.vmdk"
check qemu_io vmdk "$I/child.vmdk" "write -P 0x23 65536 4096"
rm -f "$T/ref.raw"
check qemu-img convert -O raw "$I/child.vmdk" "$T/ref.raw"
ctl_ok "$G" "open ch vmdk:$I/child.vmdk ro"
same_raw "child: reads through its parent like qemu" "$G/ch" "$T/ref.raw"
check_match "child: .ctl shows the chain" "vmdk:$I/base.vmdk" \
	"$(ctl_line "$G" ch)"
ctl_close "$G" ch

# Written through the VBD (grains the parent fills around the data, at
# odd offsets): qemu reads what was written, the parent is unchanged.
base_sum=$(md5sum <"$I/base.vmdk")
cp "$T/ref.raw" "$T/ch.model"
ctl_ok "$G" "open chw vmdk:$I/child.vmdk"
check pylib randio write chain "$G/chw" "$T/ch.model" 51 40 200000
same_raw "child: the VBD reads what was written" "$G/chw" "$T/ch.model"
ctl_close "$G" chw
check qemu-img check "$I/child.vmdk"
rm -f "$T/ref.raw"
check qemu-img convert -O raw "$I/child.vmdk" "$T/ref.raw"
same_raw "child: qemu reads what tapfs wrote" "$T/ref.raw" "$T/ch.model"
check_eq "child: the parent is unchanged" "$(md5sum <"$I/base.vmdk")" \
	"$base_sum"
rm -f "$T/ch.model"

# A child of a raw parent (qemu-img makes vmdk parents only, and reads
# no other: tapfs reads it back, after a reopen), written in the middle
# of grains.
check qemu-img create -q -f raw "$I/base.raw" 8M
check qemu_io raw "$I/base.raw" "write -P 0x31 0 8M"
check qemu-img create -q -f vmdk "$I/b8.vmdk" 8M
check qemu-img create -q -f vmdk -b b8.vmdk -F vmdk "$I/rchild.vmdk"
check pylib vmdkfile hint "$I/rchild.vmdk" base.raw
ctl_ok "$G" "open rch vmdk:$I/rchild.vmdk"
check_match "raw parent: .ctl shows the chain" "aio:$I/base.raw" \
	"$(ctl_line "$G" rch)"
cp "$I/base.raw" "$T/rch.model"
for f in "$G/rch" "$T/rch.model"; do
	check put "$f" $((65536 + 3333)) 777
	check dd if="$T/rnd" of="$f" bs=512 count=130 seek=$((3 * 128 + 5)) \
		conv=notrunc status=none
done
ctl_close "$G" rch
ctl_ok "$G" "open rch vmdk:$I/rchild.vmdk ro"
same_raw "raw parent: what was written reads back" "$G/rch" "$T/rch.model"
ctl_close "$G" rch
check qemu-img check "json:{\"driver\": \"vmdk\", \"backing\": null,
	\"file\": {\"driver\": \"file\", \"filename\": \"$I/rchild.vmdk\"}}"
rm -f "$T/rch.model" "$I/rchild.vmdk" "$I/base.raw" "$I/b8.vmdk"

# A parent outside the allowed folders (named relative to the child's).
O=$(mktemp -d /tmp/tapfs-vmdk-outside.XXXXXX)
on_exit "rm -rf '$O'"
check qemu-img create -q -f vmdk "$O/obase.vmdk" 8M
check qemu-img create -q -f vmdk -b "../../${O##*/}/obase.vmdk" -F vmdk \
	"$I/ochild.vmdk"
ctl_err "$G" "open och vmdk:$I/ochild.vmdk" EACCES
check_match "parent outside: the reason names it" \
	"parent .*/obase.vmdk \\(really $O/obase.vmdk\\) is outside" \
	"$(ctl_status "$G")"

check pylib vmdkfile cid "$I/base.vmdk" 12345678
for opt in " ro" ""; do
	ctl_err "$G" "open ch2 vmdk:$I/child.vmdk$opt" EINVAL
	check_match "CID mismatch names both files (open${opt:- rw})" \
		"child.vmdk: parentCID .* does not match CID 12345678 of its parent .*base.vmdk" \
		"$(ctl_status "$G")"
done

# ---- (e) bad input -----------------------------------------------------------

# patch FILE OFFSET FORMAT VALUE: one little-endian header field.
patch() { pylib vmdkfile field "$@"; }
bad() {
	local name=$1 errno=$2 why=$3
	ctl_err "$G" "open $name vmdk:$I/$name.vmdk ro" "$errno"
	check_match "$name: the reason" "$why" "$(ctl_status "$G")"
	alive "after $name"
}
cp "$I/ms.vmdk" "$I/trunc.vmdk"
truncate -s 100000 "$I/trunc.vmdk"
bad trunc EINVAL "past the end of the file"
cp "$I/ms.vmdk" "$I/gdpast.vmdk"
patch "$I/gdpast.vmdk" 56 Q 99999999
bad gdpast EINVAL "grain directory at sector 99999999"
cp "$I/ms.vmdk" "$I/huge.vmdk"
patch "$I/huge.vmdk" 12 Q $((1 << 60))
bad huge EINVAL "capacity .* is larger than"
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "../outside.raw" 0\n' \
	>"$I/escape.vmdk"
bad escape EACCES "outside the descriptor's folder"
# An extent that is a FIFO: its open must not wait for a writer, nor its
# reads block the daemon (io_submit reads a pipe synchronously).
mkfifo "$I/pipe.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "pipe.raw" 0\n' \
	>"$I/fifo.vmdk"
bad fifo EINVAL "pipe.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=%s\nRW 8 FLAT "x.raw" 0\n' \
	"$(head -c 3000 /dev/zero | tr '\0' 1)" >"$I/longline.vmdk"
bad longline EINVAL "line 3 is longer than 1024 bytes"
ctl_ok "$G" "open again vmdk:$I/ms.vmdk ro"
ctl_close "$G" again

tapfs_stop
summary
