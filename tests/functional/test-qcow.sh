#!/bin/bash
# test-qcow.sh - the qcow (version 1) driver against qemu-img and qemu-io.
#
# (a) tapfs reads what qemu wrote, byte for byte against "qemu-img convert
#     -O raw", through a mount and through "tapfs-img convert -O raw":
#     qemu-img create + qemu-io writes, qemu-img convert -O qcow with and
#     without -c (compressed clusters), a child with a backing file
#     (512-byte clusters, as qemu makes them).
# (b) qemu reads what tapfs wrote: seeded random writes at odd offsets
#     into an empty image, into a compressed one (copied out) and into a
#     child of a backing file; fio --verify at QD32; tapfs-img convert -O
#     qcow.  qemu-img has no qcow checker ("does not support checks"):
#     tapfs-img check instead, and the data compared.
# (c) .ctl create qcow and snapshot of a qcow leaf.
# (d) refused with a reason, daemon alive: AES-encrypted (the message in
#     .ctl), a truncated file, an L1 table past the end, an absurd size.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io fio python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
requires "$TAPFS_IMG"
mkdir -p "$I"

qio() { qemu_io qcow "$@"; }

# reads NAME IMG: the VBD and tapfs-img both read what qemu-img reads.
reads() {
	local n=$1 img=$2
	rm -f "$T/$n.q.raw" "$T/$n.t.raw"
	check qemu-img convert -O raw "$img" "$T/$n.q.raw"
	ctl_ok "$G" "open $n qcow:$img"
	check_eq "$n: VBD size is the virtual size" \
		"$(file_size "$T/$n.q.raw")" "$(file_size "$G/$n")"
	same_bytes "$n: tapfs reads what qemu-img reads" "$G/$n" "$T/$n.q.raw"
	check pylib randio reads "$G/$n" "$T/$n.q.raw" 11 40
	ctl_close "$G" "$n"
	check "$TAPFS_IMG" convert -O raw "$img" "$T/$n.t.raw"
	same_bytes "$n: tapfs-img convert reads what qemu-img reads" \
		"$T/$n.t.raw" "$T/$n.q.raw"
	rm -f "$T/$n.t.raw"
}

# qemu_reads NAME IMG MODEL: qemu reads MODEL's bytes; tapfs-img check.
qemu_reads() {
	check qemu-img compare -q -f qcow -F raw "$2" "$3"
	check "$TAPFS_IMG" check "$2"
	check_match "$1: qemu-img has no qcow check" "does not support" \
		"$(qemu-img check "$2" 2>&1)"
}

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- (a) tapfs reads what qemu wrote -------------------------------------

check qemu-img create -q -f qcow "$I/q.qcow" 40M
check qio "$I/q.qcow" "write -P 0x11 0 512" \
	"write -P 0x22 $((2 * MiB - 1536)) $((8 * 1024 + 512))" \
	"write -P 0x33 $((5 * MiB + 1536)) 1536" \
	"write -P 0x44 $((7 * MiB + 512)) $((3 * MiB + 1024))" \
	"write -P 0x99 $((40 * MiB - 512)) 512"
reads q "$I/q.qcow"

pylib filegen compressible "$T/src.raw" 5 24
truncate -s 24M "$T/src.raw"
check qemu-img convert -O qcow -f raw "$T/src.raw" "$I/plain.qcow"
reads plain "$I/plain.qcow"
# qemu-img 7.2 exits 1 without a word after a compressed qcow convert
# (the image is complete): the data is compared below instead.
qemu-img convert -c -O qcow -f raw "$T/src.raw" "$I/comp.qcow" 2>&1
check_eq "comp: qemu compressed it (smaller)" 1 \
	"$(($(stat -c %s "$I/comp.qcow") < $(stat -c %s "$I/plain.qcow")))"
reads comp "$I/comp.qcow"
same_bytes "comp: reads the source" "$T/comp.q.raw" "$T/src.raw"

check qemu-img create -q -f qcow -b comp.qcow -F qcow "$I/child.qcow"
check qio "$I/child.qcow" "write -P 0x55 1000 70000" \
	"write -P 0x66 $((20 * MiB)) 5000"
reads child "$I/child.qcow"
check_match "child: .ctl shows the chain" \
	"qcow:$I/child.qcow -> qcow:$I/comp.qcow" \
	"$(ctl "$G" "open child qcow:$I/child.qcow" >/dev/null;
	   ctl_line "$G" child)"
ctl_close "$G" child

# ---- (b) qemu reads what tapfs wrote -------------------------------------

check qemu-img create -q -f qcow "$I/w.qcow" 48M
truncate -s 48M "$T/w.model"
ctl_ok "$G" "open w qcow:$I/w.qcow"
check pylib randio write qcow2 "$G/w" "$T/w.model" 31 80
same_bytes "w: the VBD reads the model" "$G/w" "$T/w.model"
ctl_close "$G" w
qemu_reads w "$I/w.qcow" "$T/w.model"

# Writes into compressed clusters copy them out.
cp "$I/comp.qcow" "$I/cw.qcow"
cp "$T/src.raw" "$T/cw.model"
ctl_ok "$G" "open cw qcow:$I/cw.qcow"
check pylib randio write qcow2 "$G/cw" "$T/cw.model" 32 60
same_bytes "cw: the VBD reads the model" "$G/cw" "$T/cw.model"
ctl_close "$G" cw
qemu_reads cw "$I/cw.qcow" "$T/cw.model"

# Writes into a child copy the rest of a cluster from the backing file.
cp "$I/child.qcow" "$I/chw.qcow"
cp "$T/child.q.raw" "$T/chw.model"
ctl_ok "$G" "open chw qcow:$I/chw.qcow"
check pylib randio write qcow2 "$G/chw" "$T/chw.model" 33 60
ctl_close "$G" chw
check qemu-img compare -q -f qcow -F raw "$I/chw.qcow" "$T/chw.model"
check "$TAPFS_IMG" check "$I/chw.qcow"

# fio --verify at QD32: concurrent allocations of clusters and tables.
FIO_Q=(--ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-128k
	--iodepth=32 --size=48M --verify=crc32c --randseed=4243)
ctl_ok "$G" "create fq qcow 48M"
fio_verify fq 120 --filename="$G/fq" "${FIO_Q[@]}"
ctl_close "$G" fq
check "$TAPFS_IMG" check "$S/g/fq.qcow"
check qemu-img convert -O raw "$S/g/fq.qcow" "$T/fq.raw"
fio_verify_only() {
	timeout -k 5 60 fio --name=fq-qemu --filename="$T/fq.raw" \
		--verify_only --output-format=json --output="$T/fqv.json" \
		"${FIO_Q[@]}" >"$T/fqv.err" 2>&1 &&
		! grep -q '"error" : [1-9]' "$T/fqv.json"
}
check fio_verify_only
rm -f "$T/fq.raw"

# tapfs-img convert -O qcow, create, info.
check "$TAPFS_IMG" convert -O qcow "$T/src.raw" "$T/conv.qcow"
qemu_reads conv "$T/conv.qcow" "$T/src.raw"
check "$TAPFS_IMG" create -q -f qcow -b "$I/comp.qcow" "$I/tc.qcow"
check_match "tapfs-img create -b: qemu sees the backing file" \
	"file format: qcow.*backing file: $I/comp.qcow" \
	"$(qemu-img info "$I/tc.qcow" | tr '\n' ' ')"
check qemu-img compare -q -f qcow -F raw "$I/tc.qcow" "$T/src.raw"
check_match "tapfs-img info: qcow, chain" \
	'file format: qcow .*chain \(leaf -> base\): .*tc.qcow -> .*comp.qcow' \
	"$("$TAPFS_IMG" info "$I/tc.qcow" | tr '\n' ' ')"

# ---- (c) .ctl create and snapshot ----------------------------------------

ctl_ok "$G" "create sn qcow 16M"
truncate -s 16M "$T/sn.model"
check pylib randio write qcow2 "$G/sn" "$T/sn.model" 71 30
cp "$T/sn.model" "$T/sn.frozen"
ctl_ok "$G" "snapshot sn"
check_match "sn: the leaf is a qcow child on the old leaf" \
	"qcow:$S/g/sn\.1\.qcow -> qcow:$S/g/sn\.qcow\$" "$(ctl_line "$G" sn)"
check pylib randio write qcow2 "$G/sn" "$T/sn.model" 72 30
same_bytes "sn: the VBD reads the model after the snapshot" "$G/sn" \
	"$T/sn.model"
ctl_close "$G" sn
check qemu-img compare -q -f qcow -F raw "$S/g/sn.1.qcow" "$T/sn.model"
check qemu-img compare -q -f qcow -F raw "$S/g/sn.qcow" "$T/sn.frozen"

# ---- (d) refused images ----------------------------------------------------

# patch FILE OFFSET HEXBYTES: overwrite bytes in place.
patch() {
	python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))' "$@"
}

# refused NAME FILE WHY: open fails, .ctl says WHY, the daemon lives.
refused() {
	local r
	r=$(ctl "$G" "open $1 qcow:$2")
	check_in "$1: refused" "$r" EINVAL ENOTSUP EOPNOTSUPP
	check_match "$1: .ctl names the reason" "$3" "$(ctl_status "$G")"
	alive "after $1"
}

check qemu-img create -q -f qcow "$I/enc.qcow" 8M
patch "$I/enc.qcow" 36 00000001
refused enc "$I/enc.qcow" "AES-encrypted qcow images are not supported"

cp "$I/q.qcow" "$I/short.qcow"
truncate -s 30 "$I/short.qcow"
refused short "$I/short.qcow" "shorter than a qcow header"

cp "$I/q.qcow" "$I/l1.qcow"
patch "$I/l1.qcow" 40 0000000100000000
refused l1 "$I/l1.qcow" "L1 table .* ends past the end of the file"

cp "$I/q.qcow" "$I/huge.qcow"
patch "$I/huge.qcow" 24 4000000000000000
refused huge "$I/huge.qcow" "L1 entries"

cp "$I/q.qcow" "$I/badl2.qcow"
patch "$I/badl2.qcow" 48 00000000ffff0000
refused badl2 "$I/badl2.qcow" "L1 entry 0: L2 table at"
for f in enc short l1 huge badl2; do
	fuzz_seed qcow "$I/$f.qcow"
done

tapfs_stop
summary
