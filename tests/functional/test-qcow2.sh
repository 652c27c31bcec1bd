#!/bin/bash
# test-qcow2.sh - the qcow2 driver reads what qemu wrote (qemu-img, qemu-io
# are the oracles), snapshots onto qcow2, and tapfs-img speaks qcow2.
#
# (a) tapfs reads what qemu wrote, byte-identical to "qemu-img convert -O
#     raw": cluster sizes 4k, 64k and 2M in version 2 (compat=0.10) and 3
#     (compat=1.1), filled by qemu-io at scattered offsets (partial
#     clusters, cluster- and L2-crossing writes, the last sector) with
#     zero clusters ("write -z", v3) and discarded ranges; 512-byte
#     clusters; a compressed image ("qemu-img convert -c"); extended L2
#     entries (read-only: a read-write open is refused naming the
#     feature); a backing chain of three (qcow2 -> qcow2 -> raw) and a vhd
#     backing file.  Whole-image compares and random unaligned reads.
# (b) writes: test-qcow2-write.sh; crashes: test-qcow2-crash.sh; refused
#     and malformed images: test-qcow2-bad.sh.
# (c) snapshot through .ctl of a qcow2 VBD: the child is qcow2 with the old
#     leaf as backing file (format recorded); writes go to the child, the
#     old leaf is unchanged, qemu-img reads the chain as the model.
# (d) tapfs-img: create, info, check and convert to and from qcow2.
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/qcow2-lib.sh"
# ---- (a) tapfs reads what qemu wrote -------------------------------------

SZ=$((64 * MiB))
for cs in 4k 64k 2M; do
	for compat in 0.10 1.1; do
		n=r$cs-${compat/./}
		v3=0
		[ "$compat" = 1.1 ] && v3=1
		check qemu-img create -q -f qcow2 \
			-o cluster_size=$cs,compat=$compat "$I/$n.qcow2" $SZ
		qfill "$I/$n.qcow2" $SZ $v3
		tapfs_reads "$n" "$I/$n.qcow2"
		ctl_close "$G" "$n"
	done
done

# 512-byte clusters (the L1 spans clusters, L2 tables hold 64 entries).
check qemu-img create -q -f qcow2 -o cluster_size=512 "$I/r512.qcow2" 8M
check qio "$I/r512.qcow2" "write -P 0x12 1000 300000" \
	"write -z 2000000 100000" "write -P 0x34 $((8 * MiB - 512)) 512"
tapfs_reads r512 "$I/r512.qcow2"
ctl_close "$G" r512

# A compressed image: qemu-img convert -c of a random-ish file.
pylib filegen compressible "$T/comp.src" 5 48
truncate -s 48M "$T/comp.src"
check qemu-img convert -c -O qcow2 -f raw "$T/comp.src" "$I/comp.qcow2"
check_match "comp: qemu made compressed clusters" \
	'[1-9][0-9.]*% compressed' "$(qemu-img check "$I/comp.qcow2" 2>&1)"
tapfs_reads comp "$I/comp.qcow2"
same_bytes "comp: reads the source" "$G/comp" "$T/comp.src"
ctl_close "$G" comp

# Extended L2 entries (subclusters): read-only.
if qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k \
	"$I/xl2.qcow2" 16M 2>/dev/null; then
	check qio "$I/xl2.qcow2" "write -P 0x21 4096 8192" \
		"write -z 65536 4096" "write -P 0x43 $((3 * MiB + 512)) 70000"
	tapfs_reads xl2 "$I/xl2.qcow2" " ro"
	ctl_close "$G" xl2
	check_in "xl2: a read-write open is refused" \
		"$(ctl "$G" "open xl2w qcow2:$I/xl2.qcow2")" ENOTSUP EOPNOTSUPP
	check_match "extended L2: read-write refusal names the feature" \
		"extended L2 entries" "$(tail -n 3 "$TAPFS_LOG")"
fi

# A backing chain of three: qcow2 (v3) -> qcow2 (v2) -> raw.
pylib filegen random "$I/base.raw" 7 $((24 * MiB))
check qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw \
	"$I/mid.qcow2"
check qio "$I/mid.qcow2" "write -P 0x71 $((3 * MiB)) $((2 * MiB + 5 * 512))" \
	"write -P 0x72 100 1000"
check qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$I/top.qcow2" 32M
check qio "$I/top.qcow2" "write -P 0x73 $((4 * MiB)) 4096" \
	"write -z $((10 * MiB)) 65536" "write -P 0x74 $((30 * MiB)) 5000"
tapfs_reads top "$I/top.qcow2"
check_match "top: .ctl shows the chain of three" \
	"qcow2:$I/top.qcow2 -> qcow2:$I/mid.qcow2 -> aio:$I/base.raw" \
	"$(ctl_line "$G" top)"
ctl_close "$G" top

# A vhd backing file.
check qemu-img create -q -f vpc -o subformat=dynamic "$I/vb.vhd" 16M
check qemu-io -f vpc -c "write -P 0x5c 1M 3M" "$I/vb.vhd"
VB=$(qemu-img info -f vpc --output=json "$I/vb.vhd" | json_field virtual-size)
check qemu-img create -q -f qcow2 -b vb.vhd -F vpc "$I/onvhd.qcow2" "$VB"
check qio "$I/onvhd.qcow2" "write -P 0x5d $((2 * MiB)) 4096"
tapfs_reads onvhd "$I/onvhd.qcow2"
check_match "onvhd: the backing file opens with the vhd driver" \
	"vhd:$I/vb.vhd" "$(ctl_line "$G" onvhd)"
ctl_close "$G" onvhd

# ---- (c) snapshot of a qcow2 VBD ---------------------------------------

ctl_ok "$G" "create sn qcow2 32M"
truncate -s 32M "$T/sn.model"
check q2io write "$G/sn" "$T/sn.model" 71 60 10
cp "$T/sn.model" "$T/sn.frozen"
ctl_ok "$G" "snapshot sn"
SNC=$(ctl_line "$G" sn | awk '{ print $6 }')
check_match "sn: the leaf is a qcow2 child on the old leaf" \
	"^qcow2:$S/g/sn\.1\.qcow2 -> qcow2:$S/g/sn\.qcow2\$" \
	"$(ctl_line "$G" sn | cut -d' ' -f6-)"
check q2io write "$G/sn" "$T/sn.model" 72 60 10
same_bytes "sn: the VBD reads the model after the snapshot" "$G/sn" \
	"$T/sn.model"
ctl_close "$G" sn
check_match "sn child: backing file and format recorded" \
	'backing file: sn\.qcow2.*backing file format: qcow2' \
	"$(qemu-img info "$S/g/sn.1.qcow2" | tr '\n' ' ')"
qcheck "$S/g/sn.1.qcow2"
qcheck "$S/g/sn.qcow2"
check qemu-img compare -q -F raw "$S/g/sn.1.qcow2" "$T/sn.model"
check qemu-img compare -q -F raw "$S/g/sn.qcow2" "$T/sn.frozen"
: "$SNC"

# ---- (d) tapfs-img ------------------------------------------------------

if [ -x "$TAPFS_IMG" ]; then
	check "$TAPFS_IMG" create -q -f qcow2 -o cluster_size=4K,compat=0.10 \
		"$T/ti.qcow2" 16M
	qcheck "$T/ti.qcow2"
	check_match "tapfs-img info: qcow2, v2, 4k clusters" \
		'file format: qcow2.*compat: 0.10.*cluster size: 4096' \
		"$("$TAPFS_IMG" info "$T/ti.qcow2" | tr '\n' ' ')"
	check "$TAPFS_IMG" create -q -f qcow2 -b "$I/top.qcow2" "$T/tc.qcow2"
	check qemu_raw "$T/tc.qcow2" "$T/tc.q.raw"
	same_bytes "tapfs-img create -b: qemu reads the chain" "$T/top.raw" \
		"$T/tc.q.raw"
	check_match "tapfs-img info --json: the chain of four" \
		'"chain": \[.*tc.qcow2.*top.qcow2.*mid.qcow2.*base.raw' \
		"$("$TAPFS_IMG" info --json "$T/tc.qcow2" | tr -d '\n')"
	check "$TAPFS_IMG" convert -O raw "$T/tc.qcow2" "$T/tc.raw"
	same_bytes "tapfs-img convert -O raw of a chain" "$T/tc.raw" \
		"$T/top.raw"
	check "$TAPFS_IMG" convert -O qcow2 -o cluster_size=2M "$T/tc.raw" \
		"$T/tc2.qcow2"
	qcheck "$T/tc2.qcow2"
	check qemu-img compare -q -F raw "$T/tc2.qcow2" "$T/top.raw"
	check "$TAPFS_IMG" convert -O vhd "$I/comp.qcow2" "$T/comp.vhd"
	check qemu-img compare -q -f vpc -F raw "$T/comp.vhd" "$T/comp.src"
	check "$TAPFS_IMG" check "$I/comp.qcow2"
	# A cluster in use whose refcount is 0: an error, named.
	cp "$T/tc2.qcow2" "$T/bad.qcow2"
	pylib qcow2file edit "$T/bad.qcow2" refcount 3 0	# cluster 3: data
	check_not "$TAPFS_IMG" check "$T/bad.qcow2"
	check_match "tapfs-img check names the undercounted cluster" \
		'cluster 3 .*refcount 0 but 1 references' \
		"$("$TAPFS_IMG" check "$T/bad.qcow2" 2>&1)"
fi

tapfs_stop
summary
