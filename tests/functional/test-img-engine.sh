#!/bin/bash
# test-img-engine.sh - tapfs-img on the engine: what reading and writing
# image data through the daemon's drivers gives the tool, against qemu-img.
#
#   - convert at every queue depth (-m 1, 8, 64) equals qemu-img's reading,
#     for raw, vhd and qcow2 sources (qcow2 with compressed clusters and a
#     vhd parent) into raw, vhd and qcow2 destinations; qemu-img check is
#     clean on what it writes;
#   - convert into an existing block device (a loop device full of 0xff)
#     writes the zeros too (it used to skip them, leaving old bytes);
#   - coalesce of a qcow2 child into a qcow2 parent and into a raw parent:
#     the parent alone then reads as the child did (qemu-img compare), a
#     zero cluster of the child included;
#   - snapshot of a qcow2 base makes a qcow2 child; a VHD child of a qcow2
#     parent is refused by name;
#   - usage: -m out of range.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io cmp losetup

IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
[ -x "$IMG" ] || { fail "tapfs-img" "$IMG is not built"; summary; }
cd "$T" || exit 1

qio() { qemu_io "$@"; }

PAT=("write -P 0xab 0 64k" "write -P 0x11 1m 4k" "write -P 0x22 2047k 2k"
     "write -P 0x33 5000k 333k" "write -P 0x44 17m 3m" "write -P 0x55 63m 1m")

# ---- sources ---------------------------------------------------------------

qemu-img create -q -f raw src.raw 64M
qio raw src.raw "${PAT[@]}"
qemu-img create -q -f vpc src.vhd 64M
qio vpc src.vhd "${PAT[@]}"
# A qcow2 with compressed clusters on a vhd base, a zero cluster on top.
qemu-img convert -q -c -f raw -O qcow2 src.raw comp.qcow2
"$IMG" create -q -f vhd vbase.vhd 64M
qemu-img convert -q -n -f raw -O vpc src.raw vbase.vhd 2>/dev/null ||
	qio vpc vbase.vhd "${PAT[@]}"
qemu-img create -q -f qcow2 -b vbase.vhd -F vpc over.qcow2
qio qcow2 over.qcow2 "write -P 0x77 3m 100k" "write -z 17m 64k"

for s in src.raw:raw src.vhd:vpc comp.qcow2:qcow2 over.qcow2:qcow2; do
	f=${s%%:*}
	qemu-img convert -f "${s#*:}" -O raw "$f" "$f.want" ||
		fail "qemu-img convert $f"
	for m in 1 8 64; do
		for o in raw vhd qcow2; do
			rm -f "out.$o"
			check "$IMG" convert -m "$m" -O "$o" "$f" "out.$o"
			qf=$o; [ "$o" = vhd ] && qf=vpc
			check qemu-img compare -q -f raw -F "$qf" "$f.want" \
				"out.$o"
			[ "$o" = qcow2 ] && check qemu-img check -q "out.$o"
		done
	done
done

# ---- convert into a block device writes zeros too ---------------------------

head -c $((64 << 20)) /dev/zero | tr '\0' '\377' > dev.img
if loop_attach dev.img; then
	check "$IMG" convert -O raw comp.qcow2 "$LOOP_DEV"
	check cmp src.raw "$LOOP_DEV"
fi

# ---- coalesce of qcow2 children ---------------------------------------------

for pfmt in qcow2 raw; do
	rm -f p.$pfmt c.qcow2
	qemu-img create -q -f $pfmt p.$pfmt 64M
	qio $pfmt p.$pfmt "write -P 0x01 0 8m" "write -P 0x02 40m 1m"
	qemu-img create -q -f qcow2 -b p.$pfmt -F $pfmt c.qcow2
	qio qcow2 c.qcow2 "write -P 0x99 1m 1m" "write -z 40m 64k" \
		"write -P 0x98 60m 3k"
	qemu-img convert -f qcow2 -O raw c.qcow2 c.want
	check "$IMG" coalesce c.qcow2
	check qemu-img compare -q -f raw -F $pfmt c.want p.$pfmt
	check qemu-img compare -q -f raw -F qcow2 c.want c.qcow2
	[ $pfmt = qcow2 ] && check qemu-img check -q p.qcow2
done
check_out "coalesce of an image without parent" 1 'not a differencing image' \
	"$IMG" coalesce p.qcow2

# ---- snapshot follows the base's format --------------------------------------

check "$IMG" snapshot comp.qcow2 snap.qcow2
check_out "the child of a qcow2 base is qcow2" 0 '"format": "qcow2"' \
	qemu-img info --output=json snap.qcow2
check_out "its backing file is the base" 0 'comp.qcow2' \
	qemu-img info --output=json snap.qcow2
check qemu-img compare -q -f raw -F qcow2 src.raw snap.qcow2
check_out "a VHD child of a qcow2 parent is refused" 1 \
	'comp.qcow2 is a qcow2 image: the parent of a VHD is a VHD or a raw' \
	"$IMG" create -f vhd -b comp.qcow2 bad.vhd
check_not test -e bad.vhd

# ---- usage -----------------------------------------------------------------

check_out "-m 0 is a usage error" 2 '-m takes 1 to 64' \
	"$IMG" convert -m 0 -O raw src.raw x.raw
check_out "-m 65 is a usage error" 2 '-m takes 1 to 64' \
	"$IMG" convert -m 65 -O raw src.raw x.raw
check_not test -e x.raw

summary
