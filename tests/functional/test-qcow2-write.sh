#!/bin/bash
# test-qcow2-write.sh - qemu accepts what the qcow2 driver wrote.
#
# Seeded random writes (partial sectors, cluster-crossing, megabyte
# writes) and discards (fallocate PUNCH_HOLE) through qcow2 VBDs, with a
# model file of what every byte should hold: into a fresh "create NAME
# qcow2 SIZE" VBD, into qemu-made images of each cluster size (512 B to
# 2 MiB) and refcount width (2 to 64 bits), versions 2 and 3, into images
# with a backing file (v2 and v3, on a chain of three), over compressed
# clusters and over zero clusters.  The VBD reads as the model; after
# close, "qemu-img check" finds no errors, "qemu-img compare" against the
# model is equal, tapfs-img check agrees and the dirty bit is clear; the
# backing files are unchanged.  Discarded clusters are free for qemu-img.
# fio --verify at QD32 on a fresh image (concurrent allocations), verified
# again on qemu's copy.
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/qcow2-lib.sh"

# Images from qemu: the chain of three (qcow2 v3 -> qcow2 v2 -> raw), a
# compressed image, an image with zero clusters.
pylib filegen random "$I/base.raw" 7 $((24 * MiB))
check qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw \
	"$I/mid.qcow2"
check qio "$I/mid.qcow2" "write -P 0x71 $((3 * MiB)) $((2 * MiB + 5 * 512))"
check qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$I/top.qcow2" 32M
check qio "$I/top.qcow2" "write -P 0x73 $((4 * MiB)) 4096" \
	"write -z $((10 * MiB)) 65536" "write -P 0x74 $((30 * MiB)) 5000"
check qemu_raw "$I/top.qcow2" "$T/top.raw"
pylib filegen compressible "$T/comp.src" 5 24
truncate -s 24M "$T/comp.src"
check qemu-img convert -c -O qcow2 -f raw "$T/comp.src" "$I/comp.qcow2"
check qemu-img create -q -f qcow2 "$I/z.qcow2" 32M
check qio "$I/z.qcow2" "write -P 0x44 $((7 * MiB + 512)) $((3 * MiB))" \
	"write -z $((7 * MiB)) $((2 * MiB))" "write -z $((20 * MiB)) $((4 * MiB))"
check qemu_raw "$I/z.qcow2" "$T/z.raw"

# ---- (b) qemu accepts what tapfs wrote ---------------------------------

# A fresh image made through .ctl.
ctl_ok "$G" "create fresh qcow2 64M"
check_eq "fresh .ctl line" \
	"fresh running qcow2 $SZ rw qcow2:$S/g/fresh.qcow2" \
	"$(ctl_line "$G" fresh)"
check_eq "fresh: dirty bit set while open" 1 "$(dirty_bit "$S/g/fresh.qcow2")"
truncate -s $SZ "$T/fresh.model"
check q2io write "$G/fresh" "$T/fresh.model" 21 250 40
same_bytes "fresh: tapfs reads the model" "$G/fresh" "$T/fresh.model"
check q2io reads "$G/fresh" "$T/fresh.model" 22 100
ctl_close "$G" fresh
after_close fresh "$S/g/fresh.qcow2" "$T/fresh.model"
check_match "fresh: the image is v3, 64k clusters, 16-bit refcounts" \
	'compat: 1.1.*refcount bits: 16' \
	"$(qemu-img info "$S/g/fresh.qcow2" | tr '\n' ' ')"
check_eq "fresh: cluster size" 65536 "$(qemu-img info --output=json \
	"$S/g/fresh.qcow2" | json_field cluster-size)"

# Writes and discards into qemu-made images: cluster sizes, refcount
# widths, versions.
for spec in 512:16:1.1 4k:16:1.1 4k:2:1.1 64k:64:1.1 2M:16:1.1 \
	64k:16:0.10 2M:16:0.10; do
	IFS=: read -r cs rb compat <<<"$spec"
	n=w$cs-$rb-${compat/./}
	size=$((32 * MiB))
	[ "$cs" = 512 ] && size=$((8 * MiB))
	check qemu-img create -q -f qcow2 \
		-o cluster_size=$cs,refcount_bits=$rb,compat=$compat \
		"$I/$n.qcow2" $size
	check qio "$I/$n.qcow2" "write -P 0x5a 1M 3M"
	check qemu_raw "$I/$n.qcow2" "$T/$n.model"
	ctl_ok "$G" "open $n qcow2:$I/$n.qcow2"
	check q2io write "$G/$n" "$T/$n.model" 31 80 20
	same_bytes "$n: tapfs reads the model" "$G/$n" "$T/$n.model"
	ctl_close "$G" "$n"
	after_close "$n" "$I/$n.qcow2" "$T/$n.model"
	rm -f "$T/$n.model"
done

# With a backing file (v3: discards become zero clusters; v2: zeros
# written), on the chain of three.
for compat in 1.1 0.10; do
	n=b${compat/./}
	check qemu-img create -q -f qcow2 -o compat=$compat -b top.qcow2 \
		-F qcow2 "$I/$n.qcow2"
	check qemu_raw "$I/$n.qcow2" "$T/$n.model"
	ctl_ok "$G" "open $n qcow2:$I/$n.qcow2"
	check q2io write "$G/$n" "$T/$n.model" 41 100 30
	same_bytes "$n: tapfs reads the model" "$G/$n" "$T/$n.model"
	ctl_close "$G" "$n"
	after_close "$n" "$I/$n.qcow2" "$T/$n.model"
	check qemu_raw "$I/top.qcow2" "$T/top.after"
	same_bytes "$n: the backing image is unchanged" "$T/top.raw" \
		"$T/top.after"
done

# Over compressed clusters (copy on write of inflated data).
cp "$T/comp.src" "$T/comp.model"
ctl_ok "$G" "open comp qcow2:$I/comp.qcow2"
check q2io write "$G/comp" "$T/comp.model" 51 100 20
same_bytes "comp: tapfs reads the model after writes" "$G/comp" \
	"$T/comp.model"
ctl_close "$G" comp
after_close comp "$I/comp.qcow2" "$T/comp.model"

# Over zero clusters (v3 "write -z") and qemu's own data.
cp "$T/z.raw" "$T/z.model"
ctl_ok "$G" "open z qcow2:$I/z.qcow2"
check q2io write "$G/z" "$T/z.model" 61 100 20
same_bytes "z: tapfs reads the model" "$G/z" "$T/z.model"
ctl_close "$G" z
after_close z "$I/z.qcow2" "$T/z.model"

# Discard frees clusters: qemu-img sees them free.
ctl_ok "$G" "create dis qcow2 32M"
check dd if=/dev/urandom of="$G/dis" bs=1M count=32 oflag=direct \
	status=none
ctl_ok "$G" "flush"
# dis is open (tapfs holds its write lock): -U reads it beside the lock.
A1=$(qemu-img check -U --output=json "$S/g/dis.qcow2" 2>/dev/null |
	json_field allocated-clusters)
check pylib filegen punch "$G/dis" $((4 * MiB)) $((16 * MiB))
ctl_close "$G" dis
A2=$(qemu-img check --output=json "$S/g/dis.qcow2" 2>/dev/null |
	json_field allocated-clusters)
check_eq "dis: 16 MiB discarded: 256 clusters fewer allocated" \
	"$((A1 - 256))" "$A2"
qcheck "$S/g/dis.qcow2"

# fio --verify at QD32 on a fresh image: concurrent allocations.
FIO_Q=(--ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-128k
	--iodepth=32 --size=64M --verify=crc32c --randseed=4243)
ctl_ok "$G" "create fq qcow2 64M"
fio_verify fq 120 --filename="$G/fq" "${FIO_Q[@]}"
check_eq "fq.errors" 0 "$(stat_val "$G" fq errors)"
ctl_close "$G" fq
qcheck "$S/g/fq.qcow2"
check qemu_raw "$S/g/fq.qcow2" "$T/fq.raw"
fio_verify_only() {
	local rc
	timeout -k 5 60 fio --name=fq-qemu --filename="$T/fq.raw" \
		--verify_only --output-format=json --output="$T/fqv.json" \
		"${FIO_Q[@]}" >"$T/fqv.err" 2>&1
	rc=$?
	[ $rc -eq 0 ] && ! grep -q '"error" : [1-9]' "$T/fqv.json"
}
check fio_verify_only
rm -f "$T/fq.raw"

tapfs_stop
summary
