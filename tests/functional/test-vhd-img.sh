#!/bin/bash
# test-vhd-img.sh - tapfs-img against qemu-img, the outside oracle.
#
# QEMU knows VHD as "vpc".  It reads and writes single VHD images (fixed,
# dynamic; a differencing image it opens as if it were dynamic, without
# its parent) and has no vpc checker.  So:
#   - images tapfs-img creates: qemu-img info agrees on the size, qemu-img
#     check is clean (or, as in QEMU 7.2, reports it has no vpc checker:
#     exit 63), qemu-img compare reads them as zeros, qemu-io writes into
#     them and tapfs-img convert then equals qemu-img convert;
#   - images qemu-img creates (dynamic, fixed), filled by qemu-io with
#     scattered patterns: tapfs-img convert -O raw equals qemu-img convert;
#   - chains made by tapfs-img (VHD and raw bases), each image written by
#     qemu-io in whole blocks (where reading it alone and through the
#     chain agree), model raw files written by qemu-io: tapfs-img convert
#     of the leaf equals the model; coalesce keeps the data, and after
#     coalescing into the base, qemu-img reads the base equal to the model;
#     a coalesce killed with SIGKILL leaves a base that checks clean;
#   - convert -O vhd round-trips through qemu-img;
#   - check names each corruption: footer checksum, BAT entry past the end,
#     block size 0 or not a power of two, header cookie, truncation,
#     missing and mismatched parents; usage and exit codes.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp truncate

IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
if [ ! -x "$IMG" ]; then
	fail "tapfs-img" "$IMG is not built (make $TOP/build/tapfs-img)"
	summary
fi
cd "$T" || exit 1

MiB=1048576
# Scattered writes: unaligned, across a 2 MiB block boundary, last sector.
PATTERN=("write -P 0xab 0 64k" "write -P 0x11 1m 4k" "write -P 0x22 2047k 2k"
	 "write -P 0x33 5000k 333k" "write -P 0x44 17m 2m"
	 "write -P 0x55 99m 1m" "write -P 0x66 104856576 512")

qio() { qemu_io "$@"; }


qemu_size() { qemu-img info --output=json -f vpc "$1" | json_field virtual-size; }
img_size() { "$IMG" info --json "$1" | json_field virtual-size; }

# qemu-img check: 0 clean; 63 is "this format does not support checks".
qemu_check() {
	local rc
	qemu-img check -f vpc "$1" >/dev/null 2>&1
	rc=$?
	[ $rc -eq 0 ] || [ $rc -eq 63 ]
}

# same_as_qemu VHD: tapfs-img and qemu-img convert it to identical raw.
same_as_qemu() {
	rm -f "$1.t.raw" "$1.q.raw"
	"$IMG" convert -O raw "$1" "$1.t.raw" &&
		qemu-img convert -f vpc -O raw "$1" "$1.q.raw" &&
		cmp "$1.t.raw" "$1.q.raw"
	local rc=$?
	rm -f "$1.t.raw" "$1.q.raw"
	return $rc
}

# equals_raw IMAGE RAW: tapfs-img convert of IMAGE (through its chain).
equals_raw() {
	rm -f "$1.t.raw"
	"$IMG" convert -O raw "$1" "$1.t.raw" && cmp "$1.t.raw" "$2"
	local rc=$?
	rm -f "$1.t.raw"
	return $rc
}

# qemu_equals_raw VHD RAW: qemu-img's reading of one VHD image.
qemu_equals_raw() {
	rm -f "$1.q.raw"
	qemu-img convert -f vpc -O raw "$1" "$1.q.raw" && cmp "$1.q.raw" "$2"
	local rc=$?
	rm -f "$1.q.raw"
	return $rc
}

# patch_header FILE OFFSET HEX: overwrite bytes of the dynamic header and
# fix its checksum, so that only the field itself is wrong.
patch_header() { pylib vhdfile header "$@"; }

# ---- images tapfs-img creates, read and written by QEMU --------------------

for sub in dynamic fixed; do
	for size in 100M 34603520; do
		f=new-$sub-$size.vhd
		check "$IMG" create -q -o subformat=$sub "$f" $size
		want=$size
		[ "$size" = 100M ] && want=$((100 * MiB))
		check_eq "qemu-img info size of $f" "$want" "$(qemu_size "$f")"
		check_eq "tapfs-img info size of $f" "$want" "$(img_size "$f")"
		check qemu_check "$f"
		check "$IMG" check "$f"
		truncate -s "$want" zero.raw
		check qemu-img compare -q -f vpc -F raw "$f" zero.raw
		rm -f zero.raw
	done
	f=new-$sub-100M.vhd
	check qio vpc "$f" "${PATTERN[@]}"
	check "$IMG" check "$f"
	check same_as_qemu "$f"
done
check_out "info --json names the subformat" 0 '"subformat": "fixed"' \
	"$IMG" info --json new-fixed-100M.vhd

# ---- images QEMU creates, read by tapfs-img -----------------------------------

for sub in dynamic fixed; do
	f=qemu-$sub.vhd
	check qemu-img create -q -f vpc -o subformat=$sub "$f" 100M
	check qio vpc "$f" "${PATTERN[@]}"
	check_eq "size of $f" "$(qemu_size "$f")" "$(img_size "$f")"
	check "$IMG" check "$f"
	check same_as_qemu "$f"
done

# ---- chains: base <- mid <- top --------------------------------------------

check "$IMG" create -q base.vhd 64M
check qio vpc base.vhd "write -P 0x10 0 5m" "write -P 0x11 33m 1536k" \
	"write -P 0x12 60m 4k"
check qemu-img convert -f vpc -O raw base.vhd model.raw
# Whole 2 MiB blocks: QEMU, which ignores parents, writes them in full.
MID=("write -P 0x20 2m 2m" "write -P 0x21 40m 4m")
TOP=("write -P 0x30 0 2m" "write -P 0x31 42m 2m" "write -P 0x32 62m 2m")
check "$IMG" snapshot base.vhd mid.vhd
check equals_raw mid.vhd model.raw
check qio vpc mid.vhd "${MID[@]}"
check qio raw model.raw "${MID[@]}"
check "$IMG" snapshot mid.vhd top.vhd
check qio vpc top.vhd "${TOP[@]}"
check qio raw model.raw "${TOP[@]}"
check equals_raw top.vhd model.raw
check_out "info shows the chain leaf -> base" 0 \
	'^chain \(leaf -> base\): top\.vhd -> .*/mid\.vhd -> .*/base\.vhd$' \
	"$IMG" info top.vhd
check_eq "info --json chain length" 3 "$("$IMG" info --json top.vhd |
	json_field 'chain#')"
for f in base.vhd mid.vhd top.vhd; do
	check "$IMG" check "$f"
	check qemu_check "$f"
done

# coalesce top into mid, then mid into base: the data stays identical, and
# QEMU reads the base (written by tapfs-img's allocation path) the same.
check "$IMG" coalesce top.vhd
check equals_raw top.vhd model.raw
check equals_raw mid.vhd model.raw
check "$IMG" coalesce -p mid.vhd
check equals_raw base.vhd model.raw
check qemu_equals_raw base.vhd model.raw
check equals_raw top.vhd model.raw
for f in base.vhd mid.vhd top.vhd; do
	check "$IMG" check "$f"
done

# ---- a raw base -----------------------------------------------------------------

truncate -s 16M rawbase.img
check qio raw rawbase.img "write -P 0x40 0 3m" "write -P 0x41 15m 1m"
cp rawbase.img rawmodel.raw
check "$IMG" snapshot rawbase.img rawchild.vhd
check_out "raw parent shown as such" 0 '^parent uuid: none \(raw parent\)$' \
	"$IMG" info rawchild.vhd
check qio vpc rawchild.vhd "write -P 0x50 2m 2m" "write -P 0x51 8m 2m"
check qio raw rawmodel.raw "write -P 0x50 2m 2m" "write -P 0x51 8m 2m"
check equals_raw rawchild.vhd rawmodel.raw
check "$IMG" check rawchild.vhd
check "$IMG" coalesce rawchild.vhd
check cmp rawbase.img rawmodel.raw

# ---- a coalesce killed mid-way leaves a consistent parent ------------------

check "$IMG" create -q kbase.vhd 256M
check "$IMG" snapshot kbase.vhd kchild.vhd
check qio vpc kchild.vhd "write -P 0x5a 0 200m"
"$IMG" coalesce kchild.vhd >/dev/null 2>&1 &
kpid=$!
sleep 0.3
kill -KILL $kpid 2>/dev/null
wait $kpid 2>/dev/null
check "$IMG" check kbase.vhd
check "$IMG" coalesce kchild.vhd
check qemu-img convert -f vpc -O raw kchild.vhd kmodel.raw
check equals_raw kbase.vhd kmodel.raw
rm -f kmodel.raw kbase.vhd kchild.vhd

# ---- convert into VHD -----------------------------------------------------------

for sub in dynamic fixed; do
	rm -f conv-$sub.vhd
	check "$IMG" convert -O vhd -o subformat=$sub model.raw conv-$sub.vhd
	check "$IMG" check conv-$sub.vhd
	check qemu_equals_raw conv-$sub.vhd model.raw
done

# ---- corruption is reported, naming the problem ------------------------

cp new-dynamic-100M.vhd bad-footer.vhd
sz=$(stat -c %s bad-footer.vhd)
printf '\x01' | dd of=bad-footer.vhd bs=1 seek=$((sz - 512 + 100)) \
	conv=notrunc 2>/dev/null
check_out "check: flipped footer byte" 1 \
	'bad footer checksum: expected 0x[0-9a-f]{8}, found 0x[0-9a-f]{8}' \
	"$IMG" check bad-footer.vhd
check_out "info: falls back to the backup footer" 0 \
	'using the backup copy at offset 0' "$IMG" info bad-footer.vhd

cp new-fixed-34603520.vhd bad-fixed.vhd
printf '\x07' | dd of=bad-fixed.vhd bs=1 seek=$((34603520 + 30)) \
	conv=notrunc 2>/dev/null
check_out "check: fixed footer checksum" 1 'bad footer checksum' \
	"$IMG" check bad-fixed.vhd
check_out "convert refuses a bad fixed footer" 1 'bad footer checksum' \
	"$IMG" convert -O raw bad-fixed.vhd bad-fixed.raw

cp new-dynamic-34603520.vhd bad-bat.vhd
printf '\x00\xff\xff\x00' | dd of=bad-bat.vhd bs=1 seek=1536 conv=notrunc \
	2>/dev/null
check_out "check: BAT entry past EOF" 1 \
	'BAT entry 0 points past the end of the file' "$IMG" check bad-bat.vhd
check_out "convert refuses a BAT entry past EOF" 1 \
	'BAT entry 0 points past the end of the file' \
	"$IMG" convert -O raw bad-bat.vhd bad-bat.raw

cp new-dynamic-34603520.vhd bad-bs.vhd
patch_header bad-bs.vhd 32 00000c00
check_out "check: block size not a power of two" 1 \
	'block size 3072 is not a power of two' "$IMG" check bad-bs.vhd
patch_header bad-bs.vhd 32 00000000
check_out "check: block size 0" 1 'block size 0' "$IMG" check bad-bs.vhd
check_out "info refuses block size 0" 1 'block size 0' \
	"$IMG" info bad-bs.vhd

cp new-dynamic-34603520.vhd bad-cookie.vhd
printf 'cxspArse' | dd of=bad-cookie.vhd bs=1 seek=512 conv=notrunc \
	2>/dev/null
check_out "check: header cookie" 1 'bad dynamic header cookie "cxspArse"' \
	"$IMG" check bad-cookie.vhd

cp qemu-dynamic.vhd truncated.vhd
truncate -s 3000000 truncated.vhd
check_out "check: truncated image" 1 'points past the end of the file' \
	"$IMG" check truncated.vhd

check "$IMG" create -q lone.vhd 8M
check "$IMG" snapshot lone.vhd orphan.vhd
check "$IMG" create -q other.vhd 8M
mv other.vhd lone.vhd
check_out "check: mismatched parent" 1 \
	'parent UUID mismatch: .*orphan.vhd expects parent UUID .* but .*lone.vhd has UUID' \
	"$IMG" check orphan.vhd
check_out "convert refuses a mismatched parent" 1 'parent UUID mismatch' \
	"$IMG" convert -O raw orphan.vhd orphan.raw
rm -f lone.vhd
check_out "check: missing parent" 1 'parent not found; tried .*lone.vhd \(W2ru\)' \
	"$IMG" check orphan.vhd
check_out "info: missing parent" 1 '^chain: broken: ' "$IMG" info orphan.vhd

# ---- usage and exit codes --------------------------------------------------

check_out "check: missing file exits 2" 2 'No such file' \
	"$IMG" check no-such.vhd
check_out "unknown verb exits 2" 2 "unknown verb 'frob'" "$IMG" frob
check_out "create without SIZE exits 2" 2 'SIZE is required' \
	"$IMG" create x.vhd
check_out "convert without -O exits 2" 2 '-O raw.vhd.qcow2[|a-z]* is required' \
	"$IMG" convert a b
check_out "create refuses an existing file" 1 'File exists' \
	"$IMG" create -q base.vhd 1M
for verb in create info check snapshot coalesce convert; do
	check_out "$verb --help" 0 "^Usage: tapfs-img $verb" \
		"$IMG" "$verb" --help
done
check_out "--help lists the verbs" 0 '^  coalesce ' "$IMG" --help

summary
