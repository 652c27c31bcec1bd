#!/bin/bash
# test-mixed-chains.sh - chains whose images are of different formats.
#
# qemu-img is the oracle wherever it follows the chain: "qemu-img convert
# -O raw" of the top image holds what the VBD reads, byte for byte.
# (a) A qcow (version 1) child over a raw base, both made and written by
#     qemu (qemu-img create -f qcow -b base.raw -F raw).
# (b) A qcow2 child over a vmdk (monolithicSparse) base, made and written
#     by qemu; then seeded random writes through tapfs (copied up from the
#     vmdk parent's data), which qemu-img reads back.
# (c) A qcow2 snapshot on a vmdk base: .ctl "snapshot" of the VBD of (b)
#     gives it a qcow2 child (qcow2 -> qcow2 -> vmdk); a pattern written
#     after it reads the same through tapfs and through qemu-img convert
#     of the new top; the old top still reads as at the snapshot, and the
#     chain opened afresh reads like qemu.
# (d) A snapshot of a bare vmdk VBD: vmdk makes no children, and a VHD
#     (the default) records its parent's file, not its format, so it
#     refuses a vmdk parent; the snapshot falls through to a qcow2 child,
#     which records "vmdk" as its backing format.  Data written before and
#     after reads the same through tapfs and through qemu-img convert of
#     the new top; the vmdk reads as at the snapshot; no VHD left behind.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"

# like_qemu NAME IMG: IMG opened read-only as VBD NAME reads what qemu-img
# reads of it through its chain (every byte, then random unaligned reads).
like_qemu() {
	local n=$1 img=$2
	check qemu_raw "$img" "$T/$n.q.raw"
	ctl_ok "$G" "open $n ${img##*.}:$img ro"
	check_eq "$n: VBD size is qemu's virtual size" \
		"$(file_size "$T/$n.q.raw")" "$(file_size "$G/$n")"
	same_bytes "$n: tapfs reads what qemu-img reads" "$G/$n" \
		"$T/$n.q.raw"
	check pylib randio reads "$G/$n" "$T/$n.q.raw" 7 30
	ctl_close "$G" "$n"
}

# write_model VBD MODEL SEED: seeded random writes (partial sectors,
# across 64 KiB and 2 MiB boundaries) to the VBD and its model; the VBD
# then reads as the model.
write_model() {
	check pylib randio write qcow2 "$1" "$2" "$3" 12
	same_bytes "${1##*/}: the VBD reads as its model after seed $3" \
		"$1" "$2"
}

# chain NAME: the chain field of the VBD's .ctl line.
chain() { ctl_line "$G" "$1" | cut -d' ' -f6-; }

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- (a) qcow over raw -------------------------------------------------------

check qemu-img create -q -f raw "$I/base.raw" 8M
check qemu_io raw "$I/base.raw" "write -P 0x11 0 70000" \
	"write -P 0x12 $((3 * MiB + 512)) 3000" \
	"write -P 0x13 $((8 * MiB - 4096)) 4096"
check qemu-img create -q -f qcow -b base.raw -F raw "$I/a.qcow"
check qemu_io qcow "$I/a.qcow" "write -P 0x21 512 3000" \
	"write -P 0x22 $((4 * MiB - 1024)) 70000" \
	"write -P 0x23 $((8 * MiB - 512)) 512"
like_qemu a "$I/a.qcow"
ctl_ok "$G" "open a qcow:$I/a.qcow ro"
check_eq "a: .ctl shows qcow over raw" \
	"qcow:$I/a.qcow -> aio:$I/base.raw" "$(chain a)"
ctl_close "$G" a

# ---- (b) qcow2 over vmdk -----------------------------------------------------

check qemu-img create -q -f vmdk -o subformat=monolithicSparse \
	"$I/base.vmdk" 16M
check qemu_io vmdk "$I/base.vmdk" "write -P 0x31 0 200000" \
	"write -P 0x32 $((5 * MiB + 512)) 3000" \
	"write -P 0x33 $((16 * MiB - 65536)) 65536"
check qemu-img create -q -f qcow2 -b base.vmdk -F vmdk "$I/b.qcow2"
check qemu_io qcow2 "$I/b.qcow2" "write -P 0x41 $((65536 - 512)) 1024" \
	"write -P 0x42 $((7 * MiB)) 100000"
like_qemu b "$I/b.qcow2"

cp "$T/b.q.raw" "$T/b.model"
ctl_ok "$G" "open b qcow2:$I/b.qcow2"
check_eq "b: .ctl shows qcow2 over vmdk" \
	"qcow2:$I/b.qcow2 -> vmdk:$I/base.vmdk" "$(chain b)"
write_model "$G/b" "$T/b.model" 41

# ---- (c) a qcow2 snapshot on the vmdk base -----------------------------------

cp "$T/b.model" "$T/b.frozen"
ctl_ok "$G" "snapshot b"
check_eq "c: the snapshot child is qcow2, on qcow2 on vmdk" \
	"qcow2:$S/g/b.1.qcow2 -> qcow2:$I/b.qcow2 -> vmdk:$I/base.vmdk" \
	"$(chain b)"
write_model "$G/b" "$T/b.model" 42
cp "$G/b" "$T/b.t.raw"
ctl_close "$G" b
check qemu_raw "$S/g/b.1.qcow2" "$T/b.q.raw"
same_bytes "c: qemu-img reads the new top as tapfs did" "$T/b.q.raw" \
	"$T/b.t.raw"
same_bytes "c: ... and as the model" "$T/b.q.raw" "$T/b.model"
check qemu_raw "$I/b.qcow2" "$T/b.old.raw"
same_bytes "c: the old top reads as at the snapshot" "$T/b.old.raw" \
	"$T/b.frozen"
like_qemu c "$S/g/b.1.qcow2"

# ---- (d) a snapshot of a bare vmdk VBD: a qcow2 child ---------------------

check qemu-img create -q -f vmdk -o subformat=monolithicSparse \
	"$I/d.vmdk" 16M
check qemu_io vmdk "$I/d.vmdk" "write -P 0x51 $((MiB + 512)) 5000"
check qemu_raw "$I/d.vmdk" "$T/d.model"
ctl_ok "$G" "open d vmdk:$I/d.vmdk"
write_model "$G/d" "$T/d.model" 51
cp "$T/d.model" "$T/d.frozen"
ctl_ok "$G" "snapshot d"
check_eq "d: the snapshot child is qcow2, on the vmdk" \
	"qcow2:$S/g/d.1.qcow2 -> vmdk:$I/d.vmdk" "$(chain d)"
check_eq "d: no VHD child left in the store" "" \
	"$(find "$S/g" -name 'd.*.vhd' -printf '%f ')"
check_match "d: the child records its backing format" \
	"backing file format: vmdk" "$(qemu-img info -U "$S/g/d.1.qcow2")"
write_model "$G/d" "$T/d.model" 52
cp "$G/d" "$T/d.t.raw"
ctl_close "$G" d
check qemu_raw "$S/g/d.1.qcow2" "$T/d.q.raw"
same_bytes "d: qemu-img reads the new top as tapfs did" "$T/d.q.raw" \
	"$T/d.t.raw"
same_bytes "d: ... and as the model" "$T/d.q.raw" "$T/d.model"
check qemu_raw "$I/d.vmdk" "$T/d.old.raw"
same_bytes "d: the vmdk reads as at the snapshot" "$T/d.old.raw" \
	"$T/d.frozen"
like_qemu d "$S/g/d.1.qcow2"

tapfs_stop
summary
