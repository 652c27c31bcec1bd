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
requires qemu-img qemu-io fio python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
TAPFS_IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
mkdir -p "$I"

# ---- helpers ------------------------------------------------------------

cat >"$T/q2io.py" <<'PYEOF'
# q2io.py: seeded random writes and discards applied to a VBD and to a
# model file, and reads comparing two files.
#
#   write VBD MODEL SEED N [DISCARDS]  N writes, and DISCARDS punched
#                                      holes (the model gets zeros)
#   reads A B SEED N                   N random unaligned reads agree
import ctypes, os, random, sys

MiB = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                           ctypes.c_int64)
PUNCH = 0x02 | 0x01     # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def one_write(rng, size):
    k = rng.random()
    if k < 0.25:                    # partial sectors, any alignment
        ln = rng.randint(1, 1600)
        off = rng.randrange(0, size - ln)
    elif k < 0.50:                  # whole sectors, 512- not 4k-aligned
        ln = 512 * rng.randint(1, 40)
        off = 512 * rng.randrange(0, (size - ln) // 512)
    elif k < 0.75:                  # across a 64 KiB / 2 MiB boundary
        ln = rng.randint(2, 300 * 1024)
        unit = rng.choice((65536, 2 * MiB))
        b = rng.randrange(1, (size - 1) // unit + 1) * unit
        off = max(0, min(b - rng.randint(1, ln - 1), size - ln))
    elif k < 0.95:                  # up to 3 MiB, unaligned
        ln = rng.randint(1, 3 * MiB)
        off = rng.randrange(0, size - ln)
    else:                           # the last bytes of the disk
        ln = rng.randint(1, 8192)
        off = size - ln
    data = bytes(ln) if rng.random() < 0.1 else rng.randbytes(ln)
    return off, data


def pwrite_all(fd, data, off, what):
    n = os.pwrite(fd, data, off)
    if n != len(data):
        sys.exit("%s: short write at %d: %d of %d" % (what, off, n,
                                                      len(data)))


def cmd_write(vbd, model, seed, n, discards):
    rng = random.Random(seed)
    size = os.path.getsize(model)
    fv = os.open(vbd, os.O_RDWR)
    fm = os.open(model, os.O_WRONLY)
    ops = ["w"] * n + ["d"] * discards
    rng.shuffle(ops)
    for i, op in enumerate(ops):
        if op == "w":
            off, data = one_write(rng, size)
            try:
                pwrite_all(fv, data, off, vbd)
            except OSError as e:
                sys.exit("seed %d op %d: pwrite(%d bytes at %d): %s" %
                         (seed, i, len(data), off, e))
            pwrite_all(fm, data, off, model)
            continue
        ln = 512 * rng.choice((1, 7, 128, 129, 4096, rng.randint(1, 8192)))
        ln = min(ln, size)
        off = 512 * rng.randrange(0, (size - ln) // 512 + 1)
        if libc.fallocate(fv, PUNCH, off, ln):
            sys.exit("seed %d op %d: punch %d at %d: %s" % (
                seed, i, ln, off, os.strerror(ctypes.get_errno())))
        pwrite_all(fm, bytes(ln), off, model)
    os.fsync(fv)
    os.close(fv)
    os.close(fm)
    print("%d writes, %d discards" % (n, discards))


def cmd_reads(a, b, seed, n):
    rng = random.Random(seed)
    size = os.path.getsize(b)
    fa = os.open(a, os.O_RDONLY)
    fb = os.open(b, os.O_RDONLY)
    for i in range(n):
        ln = rng.choice((1, 511, 513, 4095, 65537, rng.randint(1, 3 * MiB)))
        ln = min(ln, size)
        off = rng.randrange(0, size - ln + 1)
        x = os.pread(fa, ln, off)
        y = os.pread(fb, ln, off)
        if x != y:
            at = next((j for j in range(min(len(x), len(y)))
                       if x[j] != y[j]), min(len(x), len(y)))
            sys.exit("seed %d read %d: %d bytes at %d differ from byte %d"
                     % (seed, i, ln, off, off + at))
    print("%d reads agree" % n)


cmd = sys.argv[1]
if cmd == "write":
    cmd_write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
              int(sys.argv[6]) if len(sys.argv) > 6 else 0)
elif cmd == "reads":
    cmd_reads(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
else:
    sys.exit("q2io.py: unknown command " + cmd)
PYEOF

q2io() { "$PYTHON" -I "$T/q2io.py" "$@"; }

# qio FILE CMD...: one qemu-io run on a qcow2 image, each CMD a -c.
qio() {
	local file=$1 args=() c
	shift
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f qcow2 "${args[@]}" "$file" >/dev/null
}

# qemu_raw IMG RAW: qemu-img's reading of IMG through its chain.
qemu_raw() {
	rm -f "$2"
	qemu-img convert -O raw "$1" "$2"
}

# same_bytes NAME A B: A and B hold the same bytes.
same_bytes() {
	local out
	if out=$(cmp "$2" "$3" 2>&1); then
		ok "$1"
	else
		fail "$1" "$out"
	fi
}

# qcheck IMG: qemu-img check finds no errors and no leaks.
qcheck() {
	local out
	out=$(qemu-img check "$1" 2>&1)
	if [ $? -eq 0 ] && printf '%s\n' "$out" |
		grep -q "No errors were found"; then
		ok "qemu-img check $(basename "$1"): no errors"
	else
		fail "qemu-img check $(basename "$1")" \
			"$(printf '%s' "$out" | head -n 5)"
	fi
}

# dirty_bit IMG: 1 if the dirty bit (v3) is set, else 0.
dirty_bit() {
	"$PYTHON" -c 'import sys
b = open(sys.argv[1], "rb").read(80)
v = int.from_bytes(b[4:8], "big")
print(int.from_bytes(b[72:80], "big") & 1 if v >= 3 else 0)' "$1"
}

# qfill IMG SIZE: scattered qemu-io writes, zero clusters, a discard.
qfill() {
	local f=$1 size=$2 v3=$3
	local cmds=(
		"write -P 0x11 0 512"
		"write -P 0x22 $((2 * MiB - 3 * 512)) $((8 * 1024 + 512))"
		"write -P 0x33 $((5 * MiB + 1536)) 1536"
		"write -P 0x44 $((7 * MiB + 512)) $((3 * MiB + 1024))"
		"write -P 0x55 $((8 * MiB)) 4096"
		"write -P 0x66 $((21 * MiB - 512)) 1024"
		"write -P 0x88 $((40 * MiB)) $((4 * MiB))"
		"write -P 0x99 $((size - 512)) 512"
		"write -P 0xaa $((size - 3 * MiB - 2560)) 2560"
		"discard $((40 * MiB)) $((2 * MiB))"
	)
	if [ "$v3" = 1 ]; then
		cmds+=("write -z $((7 * MiB)) $((2 * MiB))"
		       "write -z $((30 * MiB)) $((4 * MiB))")
	fi
	check qio "$f" "${cmds[@]}"
}

# tapfs_reads NAME IMG: open IMG as a VBD, compare with qemu's reading.
tapfs_reads() {
	local n=$1 img=$2 extra=${3:-}
	check qemu_raw "$img" "$T/$n.raw"
	ctl_ok "$G" "open $n qcow2:$img$extra"
	check_eq "$n: VBD size is the virtual size" "$(file_size "$T/$n.raw")" \
		"$(file_size "$G/$n")"
	same_bytes "$n: tapfs reads what qemu-img convert reads" \
		"$G/$n" "$T/$n.raw"
	check q2io reads "$G/$n" "$T/$n.raw" 11 60
}

if [ -x "$TAPFS_IMG" ]; then
	img_check() { check "$TAPFS_IMG" check "$1"; }
else
	img_check() { echo "skip - tapfs-img check $1 (not built)"; }
fi

# after_close NAME IMG MODEL: the closed image is what tapfs wrote.
after_close() {
	local n=$1 img=$2 model=$3
	qcheck "$img"
	check qemu-img compare -q -F raw "$img" "$model"
	check_eq "$n: dirty bit clear after close" 0 "$(dirty_bit "$img")"
	img_check "$img"
}

tapfs_start "$M" "$S" || summary
check mkdir "$G"

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
"$PYTHON" -c 'import random, sys
r = random.Random(5)
with open(sys.argv[1], "wb") as f:
    for i in range(48):
        if i % 5 == 3:
            f.write(bytes(1 << 20))
        else:
            f.write(bytes(r.randrange(4)) * 1000 + r.randbytes(300) +
                    b"tapfs qcow2 " * 60000)
' "$T/comp.src"
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
"$PYTHON" -c 'import random, sys
open(sys.argv[1], "wb").write(random.Random(7).randbytes(24 << 20))' \
	"$I/base.raw"
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
VB=$(qemu-img info -f vpc --output=json "$I/vb.vhd" | "$PYTHON" -c \
	'import json, sys; print(json.load(sys.stdin)["virtual-size"])')
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
	"$PYTHON" -c 'import sys
f = open(sys.argv[1], "r+b")
h = f.read(64)
rt = int.from_bytes(h[48:56], "big")
f.seek(rt); rb = int.from_bytes(f.read(8), "big")
f.seek(rb + 2 * 3); f.write(b"\0\0")   # cluster 3: data
' "$T/bad.qcow2"
	check_not "$TAPFS_IMG" check "$T/bad.qcow2"
	check_match "tapfs-img check names the undercounted cluster" \
		'cluster 3 .*refcount 0 but 1 references' \
		"$("$TAPFS_IMG" check "$T/bad.qcow2" 2>&1)"
fi

tapfs_stop
summary
