# qcow2-lib.sh - setup and helpers shared by the qcow2 functional tests
# (sourced after lib.sh by test-qcow2.sh and test-qcow2-write.sh).
# shellcheck shell=bash
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

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"
SZ=$((64 * MiB))
