# qcow2-lib.sh - setup and helpers shared by the qcow2 functional tests
# (sourced after lib.sh by test-qcow2.sh and test-qcow2-write.sh).
# shellcheck shell=bash
requires qemu-img qemu-io fio python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"

# ---- helpers ------------------------------------------------------------

# q2io write VBD MODEL SEED N [DISCARDS] | reads A B SEED N: seeded
# random writes (across 64 KiB and 2 MiB boundaries) and discards applied
# to a VBD and its model; reads comparing two files (pylib/randio.py).
q2io() {
	case $1 in
	write) shift; pylib randio write qcow2 "$@" ;;
	*) pylib randio "$@" ;;
	esac
}

# qio FILE CMD...: one qemu-io run on a qcow2 image, each CMD a -c.
qio() { qemu_io qcow2 "$@"; }

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
dirty_bit() { pylib qcow2file dirty "$1"; }

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
